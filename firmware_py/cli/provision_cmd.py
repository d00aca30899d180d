"""`kaoclock provision`: bring a reader up (key, config, backend key, passphrase, registration)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from firmware_py.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "provision",
        help="bring a reader up: device key, config, backend key, passphrase; prints the registration for the backend",
        description="Safe to re-run: an existing key is kept, an identical config left alone, a conflicting one refused.",
    )
    p.add_argument("--device-id", required=True, help="this reader's id (lowercase letters, digits, '-')")
    p.add_argument("--site", required=True, help="its site id (lowercase letters, digits, '-')")
    p.add_argument("--broker", action="append", required=True, help="broker URL, e.g. mqtts://broker.example:8883 (repeat for failover)")
    p.add_argument("--config-out", help="config file to write (default: $KAOCLOCK_CONFIG, else <data dir>/kaoclock.toml)")
    p.add_argument("--data-dir", help="the reader's state directory (default: the existing config's, else $KAOCLOCK_HOME)")
    p.add_argument("--backend-key", metavar="JWK", help="the backend's command-signing public key (`kaoclock backend key --jwk`)")
    p.add_argument("--replace-backend-key", action="store_true", help="trust --backend-key instead of a different installed one")
    p.add_argument("--passphrase-stdin", action="store_true", help="set the technician passphrase from the first line of stdin")
    p.add_argument("--force", action="store_true", help="change an existing config that says otherwise (kept as FILE.bak)")
    p.add_argument("--json", action="store_true", help="print only the registration message (JSON)")
    p.set_defaults(func=cmd_provision)


def cmd_provision(args: argparse.Namespace) -> int:
    from firmware_py.config import Config
    from firmware_py.provision.device import ProvisionRequest, provision

    if args.config_out:
        config_out = Path(args.config_out)
    elif os.environ.get("KAOCLOCK_CONFIG"):
        config_out = Path(os.environ["KAOCLOCK_CONFIG"])
    else:
        config_out = Path(args.data_dir or Config().device.data_dir) / "kaoclock.toml"
    passphrase = None
    if args.passphrase_stdin:
        passphrase = sys.stdin.readline().rstrip("\r\n")
        if not passphrase:
            raise UsageError("--passphrase-stdin: stdin gave no passphrase")
    req = ProvisionRequest(
        device_id=args.device_id,
        site=args.site,
        brokers=args.broker,
        config_out=config_out,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        backend_jwk=Path(args.backend_key) if args.backend_key else None,
        passphrase=passphrase,
        force=args.force,
        replace_backend_key=args.replace_backend_key,
    )
    res = provision(req)
    reg = json.dumps(res.registration, indent=2)
    if args.json:
        print(reg)
        return 0
    data_dir = res.config.device.data_dir
    print(f"config      {res.config_path}: {res.config_status}")
    print(f"device key  {res.key_path}: {res.key_status} (kid {res.kid})")
    print(f"backend key {res.backend_status}")
    print(f"passphrase  {res.passphrase_status}")
    for note in res.notes:
        print(f"note: {note}")
    print("\npublic key (JWK):")
    print(json.dumps(res.jwk, indent=2))
    print("\nregistration message (also in " + str(data_dir / "registration.json") + "):")
    print(reg)
    print(
        f"\nnext, at the backend: kaoclock backend devices add {res.config.device.site} {res.config.device.id} "
        f"{data_dir / 'keys' / 'device.jwk'}\nthen check here: kaoclock config check {res.config_path}"
    )
    return 0
