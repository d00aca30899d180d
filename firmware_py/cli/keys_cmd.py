"""`kaoclock keys init|export|show|trust-backend`: the device key and the backend key it trusts."""

from __future__ import annotations

import argparse
import json
import stat
import sys
from pathlib import Path

from firmware_py.config import load
from firmware_py.keys.jwk import KeyFileError, load_public_keys, public_jwk
from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, load_private_key, write_private_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="the device's signing key and the backend key it trusts")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    ksub.required = True

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", help="config file (default: the embedded default; the key lives in [device] data_dir/keys)")
        sp.add_argument("--json", action="store_true", help="print the report as JSON")
        return sp

    i = with_config(ksub.add_parser("init", help="create the device key (Ed25519, mode 0600); refuses to replace an existing one"))
    i.add_argument("--replace", action="store_true", help="replace an existing key (the old one is kept as *.retired-<time>)")
    i.set_defaults(func=cmd_init)

    e = with_config(ksub.add_parser("export", help="print the device's public key"))
    e.add_argument("--jwk", action="store_true", default=True, help="as a JWK (RFC 7517/8037) with kid = RFC 7638 thumbprint (the default)")
    e.set_defaults(func=cmd_export)

    s = with_config(ksub.add_parser("show", help="where the keys are and their ids"))
    s.set_defaults(func=cmd_show)

    t = with_config(ksub.add_parser("trust-backend", help="install the backend's public key (JWK or JWK Set) that signs commands"))
    t.add_argument("file", help="JWK file from `kaoclock backend key --jwk`")
    t.add_argument("--replace", action="store_true", help="replace an installed backend key")
    t.set_defaults(func=cmd_trust)


def _key_path(args: argparse.Namespace) -> Path:
    cfg = load(args.config)
    return cfg.punch.key_file or device_key_path(cfg.device.data_dir)


def cmd_init(args: argparse.Namespace) -> int:
    info = init_private_key(_key_path(args), replace=args.replace)
    if info.retired:
        print(f"the old key was kept as {info.retired}; register the new public key with the backend", file=sys.stderr)
    if args.json:
        print(json.dumps({"device_key": str(info.path), "kid": info.kid, "retired": str(info.retired) if info.retired else None}, indent=2))
    else:
        print(f"device key created: {info.path} (kid {info.kid})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    key = load_private_key(_key_path(args))
    print(json.dumps(public_jwk(key), indent=2))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    path = cfg.punch.key_file or device_key_path(cfg.device.data_dir)
    out: dict[str, object] = {"device_key": str(path)}
    try:
        out["kid"] = public_jwk(load_private_key(path))["kid"]
        out["mode"] = f"{stat.S_IMODE(path.stat().st_mode):04o}"
    except KeyFileError as exc:
        out["problem"] = str(exc)
    bpath = cfg.mqtt.backend_key_file or backend_public_path(cfg.device.data_dir)
    out["backend_keys_file"] = str(bpath)
    try:
        out["backend_kids"] = sorted(load_public_keys(bpath))
    except KeyFileError as exc:
        out["backend_problem"] = str(exc)
    print(json.dumps(out, indent=2))
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    keys = load_public_keys(Path(args.file))  # validates: Ed25519, public only, kid = thumbprint
    dest = cfg.mqtt.backend_key_file or backend_public_path(cfg.device.data_dir)
    if dest.exists():
        if not args.replace:
            raise KeyFileError(f"a backend key is already installed at {dest}; use --replace to change it")
        dest.unlink()
    jwks = {"keys": [dict(k.jwk) | {"kid": k.kid} for k in keys.values()]}
    write_private_file(dest, (json.dumps(jwks, indent=2) + "\n").encode())
    dest.chmod(0o644)
    if args.json:
        print(json.dumps({"backend_kids": sorted(keys), "file": str(dest)}, indent=2))
    else:
        print(f"backend key(s) {', '.join(sorted(keys))} installed at {dest}")
    return 0
