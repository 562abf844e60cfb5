"""The `tenants` command line, the embedded stack and starter scripts."""
