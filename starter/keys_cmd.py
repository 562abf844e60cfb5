"""`tenants keys init | rotate | list`: the backup signing key file (tenancy/signing.py). Secrets never leave it."""

from __future__ import annotations

import argparse
from pathlib import Path

from activities.infra.manifest_signing import create_key_file, read_keyring, rotate_key_file
from starter.output import table
from tenancy.settings import Settings


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="backup signing keys: init, rotate, list")
    actions = p.add_subparsers(dest="action", required=True)
    where = (
        "the key file (default: TENANTS_BACKUP_SIGNING_KEY_FILE, else the one `tenants up` uses in its state folder)"
    )
    init = actions.add_parser("init", help="create the key file with one new key (0600); never overwrites one")
    rotate = actions.add_parser("rotate", help="add a new key that signs from now on; the others still verify")
    listing = actions.add_parser("list", help="key ids, and which one signs (never the secrets)")
    for action, handler in ((init, init_keys), (rotate, rotate_keys), (listing, list_keys)):
        action.add_argument("--file", type=Path, metavar="PATH", help=where)
        action.set_defaults(handler=handler)


def key_file(args: argparse.Namespace, settings: Settings) -> Path:
    """--file, else TENANTS_BACKUP_SIGNING_KEY_FILE, else the embedded stack's (tenancy.settings)."""
    chosen = args.file or settings.backup_signing_key_file or settings.stack_signing_key_file
    return Path(chosen).expanduser().resolve()


def _used_by(path: Path, settings: Settings) -> str:
    if settings.backup_signing_key_file and Path(settings.backup_signing_key_file).expanduser().resolve() == path:
        return "workers with this TENANTS_BACKUP_SIGNING_KEY_FILE sign with it"
    if path == settings.stack_signing_key_file:
        return "`tenants up` signs with it; other workers need TENANTS_BACKUP_SIGNING_KEY_FILE=" + str(path)
    return f"workers sign with it once TENANTS_BACKUP_SIGNING_KEY_FILE={path}"


async def init_keys(args: argparse.Namespace, settings: Settings) -> int:
    path = key_file(args, settings)
    key = create_key_file(path)
    print(f"created {path} (0600) with key {key.key_id}: {_used_by(path, settings)}")
    print("keep a copy with your other secrets, away from backup storage: without it no backup it signs restores")
    return 0


async def rotate_keys(args: argparse.Namespace, settings: Settings) -> int:
    path = key_file(args, settings)
    key = rotate_key_file(path)
    count = len(read_keyring(path).keys)
    print(
        f"key {key.key_id} signs new backups from now on; the {count - 1} older key(s) still verify the backups "
        f"they signed (remove one from {path} when no backup signed by it is kept)"
    )
    return 0


async def list_keys(args: argparse.Namespace, settings: Settings) -> int:
    path = key_file(args, settings)
    keyring = read_keyring(path)
    print(f"{path}:")
    print(
        table(
            ["KEY ID", "USE"],
            [[k.key_id, "signs and verifies" if k is keyring.signing else "verifies"] for k in keyring.keys],
        )
    )
    return 0
