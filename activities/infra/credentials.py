"""Tenant role credentials: generated here, stored as 0600 files, never in workflow inputs, history or logs.

The password reaches PostgreSQL as a SCRAM-SHA-256 verifier, so not even the server's statement log sees it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict


def scram_sha256_verifier(password: str, iterations: int = 4096) -> str:
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def new_password() -> str:
    return secrets.token_urlsafe(24)


def credentials_path(folder: Path, tenant_id: str) -> Path:
    return folder / f"{tenant_id}.json"


def write_credentials(
    folder: Path,
    tenant_id: str,
    role: str,
    password: str,
    database: str,
    admin_url: str,
    server_name: str | None = None,
) -> Path:
    """The role's credentials, with the host and port of the server holding its database (`admin_url`, that
    server's admin URL) and that server's name: a tenant on another server than `default` connects there."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    server = conninfo_to_dict(admin_url)
    payload = {
        "tenant_id": tenant_id,
        "role": role,
        "password": password,
        "database": database,
        "host": server.get("host", "localhost"),
        "port": int(server.get("port") or 5432),
    }
    if server_name is not None:
        payload["server"] = server_name
    target = credentials_path(folder, tenant_id)
    temp = target.with_name(f".{target.name}.partial")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(temp, target)
    return target


def read_credentials(folder: Path, tenant_id: str) -> dict:
    return json.loads(credentials_path(folder, tenant_id).read_text())


def delete_credentials(folder: Path, tenant_id: str) -> None:
    credentials_path(folder, tenant_id).unlink(missing_ok=True)
