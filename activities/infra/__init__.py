"""Infrastructure the activities adapt, and that the command line, tests and benchmarks use directly: blob storage
backends, the catalog repository, PostgreSQL connections and client tools, archive encoding, subprocesses, marks,
credentials, tenant schema migrations and the Temporal client. Nothing here is a Temporal activity."""
