"""The public contract of tenant-lifecycle: what each workflow takes and returns. Versioned: fields are added
with defaults, never renamed or removed, so runs started by an older starter still decode."""
