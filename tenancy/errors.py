"""Error types that cross the workflow boundary.

Workflows and activities raise temporalio ApplicationError with one of these types; the command line turns them
into one clear line. Non-retryable types are bad input or states that a retry cannot fix.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

INVALID_INPUT = "InvalidInput"
TENANT_NOT_FOUND = "TenantNotFound"
TENANT_BUSY = "TenantBusy"
TENANT_DATABASE_MISSING = "TenantDatabaseMissing"
BACKUP_VERIFICATION_FAILED = "BackupVerificationFailed"
CLIENT_TOOLS_MISSING = "ClientToolsMissing"
DUMP_FAILED = "DumpFailed"

NON_RETRYABLE = [
    INVALID_INPUT,
    TENANT_NOT_FOUND,
    TENANT_BUSY,
    TENANT_DATABASE_MISSING,
    BACKUP_VERIFICATION_FAILED,
    CLIENT_TOOLS_MISSING,
]


def fail(error_type: str, message: str) -> ApplicationError:
    """A typed, non-retryable error for the caller to raise."""
    return ApplicationError(message, type=error_type, non_retryable=True)


class InvalidInput(ValueError):
    """Bad input caught before anything is started (command line, request validation)."""


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 20:
        chain.append(current)
        current = getattr(current, "cause", None) or current.__cause__
    return chain


def failure_message(exc: BaseException) -> str:
    """The most specific message in a Temporal failure chain (workflow → child → activity → application)."""
    chain = _chain(exc)
    for item in reversed(chain):
        if isinstance(item, ApplicationError) and item.message:
            return item.message
    for item in reversed(chain):
        if str(item):
            return str(item)
    return type(exc).__name__


def failure_type(exc: BaseException) -> str | None:
    """The ApplicationError type deepest in a Temporal failure chain, if any."""
    for item in reversed(_chain(exc)):
        if isinstance(item, ApplicationError) and item.type:
            return item.type
    return None


BACKUP_NOT_FOUND = "BackupNotFound"
BACKUP_REJECTED = "BackupRejected"
RESTORE_FAILED = "RestoreFailed"
RESTORE_VERIFICATION_FAILED = "RestoreVerificationFailed"

PLAN_LIMIT_REACHED = "PlanLimitReached"
TENANT_EXISTS = "TenantExists"
MIGRATION_CHANGED = "MigrationChanged"
SCHEMA_ERROR = "SchemaError"

NON_RETRYABLE += [
    BACKUP_NOT_FOUND,
    BACKUP_REJECTED,
    RESTORE_VERIFICATION_FAILED,
    PLAN_LIMIT_REACHED,
    TENANT_EXISTS,
    MIGRATION_CHANGED,
    SCHEMA_ERROR,
]

NOTHING_TO_UNDO = "NothingToUndo"
NON_RETRYABLE += [NOTHING_TO_UNDO]

# A database or role of the expected name that carries no mark of the tenant: it may be someone else's.
NOT_MARKED = "NotMarked"
NON_RETRYABLE += [NOT_MARKED]

ROLE_IN_USE = "RoleInUse"
NON_RETRYABLE += [ROLE_IN_USE]

# The tenant was erased: its age key is destroyed, so nothing of it can be backed up or restored again.
TENANT_KEY_DESTROYED = "TenantKeyDestroyed"
NON_RETRYABLE += [TENANT_KEY_DESTROYED]

# With a signing key configured: a backup whose manifest is unsigned, or not signed by a key of the keyring.
BACKUP_NOT_AUTHENTIC = "BackupNotAuthentic"
NON_RETRYABLE += [BACKUP_NOT_AUTHENTIC]

# Retryable: an activity that cannot resume stopped cleanly because its worker is shutting down; another worker
# runs it again.
WORKER_SHUTDOWN = "WorkerShutdown"

# A server name this process has no admin URL for (activities/infra/servers.py): configure it, then retry.
SERVER_NOT_CONFIGURED = "ServerNotConfigured"
NON_RETRYABLE += [SERVER_NOT_CONFIGURED]

# Moves between servers (workflows/move_tenant.py). Failed: retryable (a server went away mid-copy). Refused: the
# target cannot take the tenant, or its data is not the tenant's role's to load; a retry cannot help.
MOVE_FAILED = "MoveFailed"
MOVE_REFUSED = "MoveRefused"
MOVE_VERIFICATION_FAILED = "MoveVerificationFailed"
NON_RETRYABLE += [MOVE_REFUSED, MOVE_VERIFICATION_FAILED]

# An export file that is not intact, not authentic or not importable here (tenants import), and masking SQL that
# failed on a clone's scratch copy (tenants clone --mask): no retry changes either.
EXPORT_REJECTED = "ExportRejected"
MASKING_FAILED = "MaskingFailed"
NON_RETRYABLE += [EXPORT_REJECTED, MASKING_FAILED]
