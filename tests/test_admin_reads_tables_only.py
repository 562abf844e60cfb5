"""The admin's row counts read tables only: a tenant's view, put where a table was listed a moment before, is refused
instead of running the tenant's functions with the admin's rights. And connection URLs never show a password."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from activities.infra.pg import connect_to_tenant_db, count_rows, refuse_views_and_foreign_tables
from tenancy.settings import Settings, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://admin:s3cret@db-b:5432/postgres", "postgresql://admin:***@db-b:5432/postgres"),
        ("postgresql://admin@db-b/postgres?password=s3cret", "postgresql://admin@db-b/postgres?password=***"),
        (
            "postgresql://a@h/db?sslmode=require&sslpassword=s3cret",
            "postgresql://a@h/db?sslmode=require&sslpassword=***",
        ),
        ("postgresql://admin@db-b:5432/postgres", "postgresql://admin@db-b:5432/postgres"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


async def test_a_view_swapped_in_for_a_table_runs_nothing_as_the_admin(settings: Settings, pg_url: str) -> None:
    dbname = f"{settings.database_prefix}views_{id(settings) % 10_000}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + f"/{dbname}", autocommit=True) as conn:
            conn.execute("CREATE SEQUENCE public.calls")
            # What a tenant would plant: a function the admin's session would run by reading the view.
            conn.execute(
                "CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS $$ SELECT nextval('public.calls')::int $$"
            )
            conn.execute("CREATE TABLE public.kept (id int)")
            conn.execute("INSERT INTO public.kept VALUES (1), (2)")
            conn.execute("CREATE VIEW public.swapped AS SELECT public.planted() AS id")
        async with await connect_to_tenant_db(pg_url, dbname, autocommit=True) as conn:
            if not await refuse_views_and_foreign_tables(conn):
                pytest.skip("this PostgreSQL has no restrict_nonsystem_relation_kind (before 15.8/16.4/17)")
        # count_rows itself puts its session under the rule: what it would name after listing can only be a table.
        async with await connect_to_tenant_db(pg_url, dbname, autocommit=True) as conn:
            assert await count_rows(conn) == {"public.kept": 2}
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is restricted"):
                await conn.execute("SELECT count(*) FROM public.swapped")
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + f"/{dbname}", autocommit=True) as conn:
            assert conn.execute("SELECT last_value, is_called FROM public.calls").fetchone() == (1, False)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
