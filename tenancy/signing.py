"""Signed backup manifests: HMAC-SHA256 over a canonical form of the stored JSON document, with a keyring.

A manifest sits beside the archive it describes, and age does not authenticate the sender: without a signature
anyone who can write to backup storage (and holds the public recipient) can forge a backup that passes every
check. The signature covers the whole stored document but its `signature` field, `key_id` included, and is
checked over the document as read from storage (never a re-dump of the model), so a manifest written by one
version verifies under the next even when the model has gained fields.

Key file: one key a line, `key_id:base64secret`; blank lines and `#` comments are ignored. The first key signs,
every key verifies. Rotation: a new key goes first, the old ones stay while backups signed by them are kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tenancy.errors import InvalidInput

SIGNATURE_FIELD = "signature"
KEY_ID_FIELD = "key_id"
MIN_SECRET_BYTES = 32
NEW_SECRET_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class NotAuthentic(Exception):
    """A manifest whose signature does not verify under the keyring; the message says why, in a few words."""


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    secret: bytes = b""

    def __repr__(self) -> str:  # never the secret, in logs or tracebacks
        return f"SigningKey(key_id={self.key_id!r})"

    def line(self) -> str:
        """The key as a line of the key file."""
        return f"{self.key_id}:{base64.b64encode(self.secret).decode()}"


@dataclass(frozen=True)
class Keyring:
    keys: tuple[SigningKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidInput("a keyring needs at least one key")
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise InvalidInput(f"key ids appear twice: {sorted({i for i in ids if ids.count(i) > 1})}")

    @property
    def signing(self) -> SigningKey:
        """The key new manifests are signed with: the first."""
        return self.keys[0]

    def get(self, key_id: str) -> SigningKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)


def validate_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise InvalidInput(f"invalid key id {key_id!r}: 1-64 letters, digits, '.', '_' or '-'")
    return key_id


def parse_keyring(text: str, source: str = "key file") -> Keyring:
    """The keys of a key file's text, first (signing) first. Any malformed line is refused, naming its number."""
    keys = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, encoded = line.partition(":")
        if not sep:
            raise InvalidInput(f"{source}, line {number}: expected key_id:base64secret")
        try:
            validate_key_id(key_id.strip())
        except InvalidInput as exc:
            raise InvalidInput(f"{source}, line {number}: {exc}") from None
        try:
            secret = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{source}, line {number}: the secret is not base64") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise InvalidInput(
                f"{source}, line {number}: the secret has {len(secret)} bytes, at least {MIN_SECRET_BYTES} are needed"
            )
        keys.append(SigningKey(key_id.strip(), secret))
    if not keys:
        raise InvalidInput(f"{source} holds no key")
    try:
        return Keyring(tuple(keys))
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: {exc}") from None


def new_key(now: datetime, taken: set[str] | frozenset[str] = frozenset()) -> SigningKey:
    """A fresh random key whose id says when it was made (k20250131-3fa9c2), unlike any id in `taken`."""
    while True:
        key_id = f"k{now:%Y%m%d}-{secrets.token_hex(3)}"
        if key_id not in taken:
            return SigningKey(key_id, secrets.token_bytes(NEW_SECRET_BYTES))


def with_new_signing_key(text: str, key: SigningKey) -> str:
    """A key file's text with `key` as its first key (so it signs), placed before the first key line; comments
    above it and every other key stay as they were."""
    lines = text.splitlines()
    first_key = next(
        (i for i, line in enumerate(lines) if line.strip() and not line.strip().startswith("#")), len(lines)
    )
    return "\n".join([*lines[:first_key], key.line(), *lines[first_key:]]) + "\n"


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """What is signed: the document without its signature field, keys sorted, compact separators, UTF-8."""
    unsigned = {k: v for k, v in document.items() if k != SIGNATURE_FIELD}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _mac(secret: bytes, document: Mapping[str, Any]) -> str:
    return hmac.new(secret, canonical_bytes(document), hashlib.sha256).hexdigest()


def sign_document(document: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
    """The document with `key_id` (covered by the signature) and `signature` set, signed by the signing key."""
    key = keyring.signing
    signed = {**document, KEY_ID_FIELD: key.key_id}
    signed.pop(SIGNATURE_FIELD, None)
    signed[SIGNATURE_FIELD] = _mac(key.secret, signed)
    return signed


def verify_document(document: Mapping[str, Any], keyring: Keyring) -> SigningKey:
    """The key that signed the document, as stored; raises NotAuthentic when its signature is missing, made with
    a key not in the keyring, or does not match the document."""
    signature = document.get(SIGNATURE_FIELD)
    key_id = document.get(KEY_ID_FIELD)
    if not signature:
        raise NotAuthentic("its manifest is not signed")
    if not isinstance(signature, str) or not isinstance(key_id, str) or not key_id:
        raise NotAuthentic("its manifest carries a malformed signature")
    key = keyring.get(key_id)
    if key is None:
        raise NotAuthentic(f"its manifest is signed by key {key_id!r}, which is not in the keyring")
    if not hmac.compare_digest(signature.encode(), _mac(key.secret, document).encode()):
        raise NotAuthentic(f"its manifest does not match its signature by key {key_id!r}")
    return key
