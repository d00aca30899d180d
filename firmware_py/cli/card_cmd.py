"""`kaoclock card add|remove|list`: which card belongs to whom."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from firmware_py.config import load


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("card", help="map reader cards to people (card_reader policies)")
    csub = p.add_subparsers(dest="card_command", metavar="ACTION")
    csub.required = True
    a = csub.add_parser("add", help="give a card to a person")
    a.add_argument("card", help="the card number as the reader sends it")
    a.add_argument("person", help="person id (as in the gallery)")
    a.add_argument("--replace", action="store_true", help="take the card from whoever holds it")
    r = csub.add_parser("remove", help="forget a card")
    r.add_argument("card")
    ls = csub.add_parser("list", help="list cards (numbers masked unless --full)")
    ls.add_argument("--full", action="store_true")
    for x in (a, r, ls):
        x.add_argument("--config", help="config file (default: the embedded default)")
        x.add_argument("--json", action="store_true", help="print the report as JSON")
    a.set_defaults(func=cmd_add)
    r.set_defaults(func=cmd_remove)
    ls.set_defaults(func=cmd_list)


def _store(args: argparse.Namespace):
    from firmware_py.gate.card_store import CARD_DB, CardStore

    cfg = load(args.config)
    return cfg, CardStore(cfg.device.data_dir / CARD_DB)


def cmd_add(args: argparse.Namespace) -> int:
    from firmware_py.gate.card_store import mask_card, normalise_card

    cfg, store = _store(args)
    store.add(args.card, args.person, pattern=cfg.card_reader.card_pattern, replace=args.replace)
    card = mask_card(normalise_card(args.card))
    print(json.dumps({"card": card, "person": args.person}) if args.json else f"card {card} -> {args.person}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from firmware_py.errors import UsageError

    _, store = _store(args)
    if not store.remove(args.card):
        raise UsageError(f"no card {args.card!r} is registered (see `kaoclock card list`)")
    print(json.dumps({"removed": True}) if args.json else "removed")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from firmware_py.gate.card_store import mask_card

    _, store = _store(args)
    rows = store.list()
    if args.json:
        out = [
            {"card": c if args.full else mask_card(c), "person": p, "added": dt.datetime.fromtimestamp(t).isoformat(timespec="seconds")}
            for c, p, t in rows
        ]
        print(json.dumps({"cards": out}, indent=2))
        return 0
    for card, person, added in rows:
        when = dt.datetime.fromtimestamp(added).strftime("%Y-%m-%d %H:%M")
        print(f"{card if args.full else mask_card(card):<24} {person:<24} {when}")
    print(f"{len(rows)} card(s)")
    return 0
