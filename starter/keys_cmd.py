"""`tenants keys init | rotate | list | sign-existing`: the backup signing key file (tenancy/signing.py).
Secrets never leave it."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from activities.infra.archive import Progress, hash_stream
from activities.infra.catalog import Catalog
from activities.infra.manifest_signing import create_key_file, read_keyring, rotate_key_file
from activities.infra.storage import Storage, open_storage
from starter.output import table
from tenancy.audit import BACKUP_SIGN, local_actor
from tenancy.contracts.backup import BackupManifest
from tenancy.errors import InvalidInput
from tenancy.settings import Settings
from tenancy.signing import SIGNATURE_FIELD, NotAuthentic, verify_document


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="backup signing keys: init, rotate, list")
    actions = p.add_subparsers(dest="action", required=True)
    where = (
        "the key file (default: TENANTS_BACKUP_SIGNING_KEY_FILE, else the one `tenants up` uses in its state folder)"
    )
    init = actions.add_parser("init", help="create the key file with one new key (0600); never overwrites one")
    rotate = actions.add_parser("rotate", help="add a new key that signs from now on; the others still verify")
    listing = actions.add_parser("list", help="key ids, and which one signs (never the secrets)")
    adopt = actions.add_parser(
        "sign-existing",
        help="sign the unsigned verified backups in storage whose bytes still match their manifest "
        "(once, when signing is turned on: they are trusted as they are now)",
    )
    adopt.add_argument("--dry-run", action="store_true", help="say what would be signed, sign nothing")
    adopt.add_argument("--tenant", metavar="ID", help="only this tenant's backups (default: every tenant's)")
    for action, handler in (
        (init, init_keys),
        (rotate, rotate_keys),
        (listing, list_keys),
        (adopt, sign_existing),
    ):
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
    if await asyncio.to_thread(lambda: open_storage(settings).usage()) > 0:
        print(
            "storage already holds backups, all unsigned: restores will refuse them once workers use this key. "
            "Restart every worker, then `tenants keys sign-existing` signs those whose bytes still match their "
            "manifest"
        )
    return 0


@dataclass
class Adoption:
    signed: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # tenant, backup, why


def _sign_tenants_backups(storage: Storage, keyring_file: Path, tenant_id: str, dry_run: bool, found: Adoption) -> None:
    """Each verified, unsigned backup of the tenant whose stored bytes hash to its manifest's sha256 gets its
    manifest signed; the others are left as they are (and stay refused by restores), each with why."""
    keyring = read_keyring(keyring_file)
    for name in storage.list_backups(tenant_id):
        document = storage.read_manifest_document(tenant_id, name)
        if document is None:
            continue  # never verified: nothing to vouch for
        if SIGNATURE_FIELD in document:
            try:
                verify_document(document, keyring)
            except NotAuthentic as exc:
                found.refused.append((tenant_id, name, f"signed, but {exc}: left refused"))
            continue
        try:
            manifest = BackupManifest.model_validate(document)
        except ValueError:
            found.refused.append((tenant_id, name, "its manifest is not readable"))
            continue
        if not manifest.verified or (manifest.tenant_id, manifest.backup_name) != (tenant_id, name):
            found.refused.append((tenant_id, name, "its manifest is not a verified one of this backup"))
            continue
        with storage.open_for_read(tenant_id, name) as reader:
            digest = hash_stream(reader, Progress())
        if digest != manifest.sha256 or storage.size(tenant_id, name) != manifest.size_bytes:
            found.refused.append((tenant_id, name, "its bytes no longer match its manifest"))
            continue
        if not dry_run:
            storage.write_manifest(manifest)
        found.signed.append((tenant_id, name))


async def sign_existing(args: argparse.Namespace, settings: Settings) -> int:
    path = key_file(args, settings)
    read_keyring(path)  # a missing or malformed file: one line, before anything is read
    storage = open_storage(settings)
    storage.signing_key_file = path
    catalog = Catalog(settings)
    found = Adoption()
    tenants = await catalog.list_tenants()
    if args.tenant is not None:
        tenants = [t for t in tenants if t.id == args.tenant]
        if not tenants:
            raise InvalidInput(f"tenant {args.tenant!r} does not exist")
    for tenant in tenants:
        before = len(found.signed)
        await asyncio.to_thread(_sign_tenants_backups, storage, path, tenant.id, args.dry_run, found)
        if not args.dry_run:
            for _, name in found.signed[before:]:
                await catalog.audit(local_actor(), BACKUP_SIGN, tenant.id, name, detail={"key_file": str(path)})
    verb = "would sign" if args.dry_run else "signed"
    for tenant_id, name in found.signed:
        print(f"{verb:<11} {tenant_id}  {name}")
    for tenant_id, name, why in found.refused:
        print(f"{'left':<11} {tenant_id}  {name}: {why}")
    print(f"{len(found.signed)} backup(s) {verb}, {len(found.refused)} left as they are")
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
