"""Demo and test data: a small time-tracking schema filled with generated rows, in a tenant's database."""

from __future__ import annotations

from pathlib import Path

from activities.infra.pg import connect, one_row
from activities.infra.schema import apply_migrations, migration_files
from tenancy.settings import PROJECT_ROOT

SAMPLE_MIGRATIONS = PROJECT_ROOT / "migrations" / "tenant"


async def seed_tenant_data(
    admin_url: str, dbname: str, entries: int = 1000, note_bytes: int = 40, migrations_dir: Path | None = None
) -> None:
    """Bring the database to the sample schema (the project's migrations) and add `entries` time entries, plus
    projects and log lines."""
    projects = max(1, entries // 100)
    async with await connect(admin_url, dbname, autocommit=True) as conn:
        await apply_migrations(conn, migration_files(migrations_dir or SAMPLE_MIGRATIONS))
        await conn.execute(
            "INSERT INTO projects (id, name) SELECT g, 'project ' || g FROM generate_series(1, %s) g "
            "ON CONFLICT DO NOTHING",
            [projects],
        )
        await conn.execute(
            "INSERT INTO time_entries (id, project_id, started_at, minutes, note) "
            "SELECT g, 1 + g %% %s, now() - g * interval '1 minute', g %% 480, "
            "left(repeat(md5(g::text), %s), %s) FROM generate_series(1, %s) g ON CONFLICT DO NOTHING",
            [projects, note_bytes // 32 + 1, note_bytes, entries],
        )
        await conn.execute(
            "INSERT INTO activity_log (message) SELECT 'entry ' || g || ' tracked' FROM generate_series(1, %s) g",
            [max(1, entries // 10)],
        )


async def table_fingerprint(admin_url: str, dbname: str) -> dict[str, str]:
    """An md5 of every sample table's rows in key order: equal fingerprints mean equal content."""
    out: dict[str, str] = {}
    async with await connect(admin_url, dbname, autocommit=True) as conn:
        for table in ("projects", "time_entries", "activity_log"):
            row = await one_row(
                await conn.execute(
                    f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM {table} t"
                )
            )
            out[table] = f"{row[0]}:{row[1]}"
    return out
