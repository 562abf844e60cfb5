"""Side effects of tenant-lifecycle: PostgreSQL, pg_dump/pg_restore, storage. Workflows call these as activities."""
