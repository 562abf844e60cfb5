"""The audit trail's vocabulary (catalog table audit_log): the actions, which catalog events are audited as which
action, how an actor is named, and the `--since` of `tenants audit`. Pure, but for local_actor()."""

from __future__ import annotations

import getpass
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from tenancy.durations import parse_duration
from tenancy.errors import InvalidInput

# Accesses to a backup.
BACKUP_LIST = "backup.list"
BACKUP_CREATE = "backup.create"
BACKUP_RESTORE = "backup.restore"  # its bytes read to restore them (a restore, a reinstatement)
BACKUP_DRILL = "backup.drill"
BACKUP_PIN = "backup.pin"
BACKUP_UNPIN = "backup.unpin"
BACKUP_SIGN = "backup.sign"  # an unsigned backup's manifest signed by `tenants keys sign-existing`
BACKUP_DELETE = "backup.delete"  # detail.reason: retention, prune or verification failed
SWEEP_REMOVE = "sweep.remove"
# Lifecycle changes of a tenant.
TENANT_PROVISION = "tenant.provision"
TENANT_PROVISION_FAILED = "tenant.provision.failed"
TENANT_STATUS = "tenant.status"
TENANT_SETTINGS = "tenant.settings"
TENANT_DEPROVISION = "tenant.deprovision"
TENANT_ERASE = "tenant.erase"  # deprovisioned, its backup key destroyed, every backup deleted
TENANT_REINSTATE = "tenant.reinstate"
TENANT_ADOPT = "tenant.adopt"
TENANT_ADOPT_FAILED = "tenant.adopt.failed"
TENANT_RESTORE = "tenant.restore"  # the restored copy swapped in as the tenant's database
RESTORE_UNDO = "restore.undo"
TENANT_MOVE = "tenant.move"  # the tenant's database moved to another server
MOVE_UNDO = "move.undo"

# The memo key under which a run's starter names who asked for it.
REQUESTED_BY = "requested_by"
# How far up the parents of a child run the actor is looked for (a fleet's child is one level down).
MAX_PARENT_DEPTH = 4

# Catalog events that are lifecycle changes: each is appended with its audit row, in one transaction.
_EVENT_ACTIONS = {
    "TenantProvisioned": TENANT_PROVISION,
    "TenantProvisioningFailed": TENANT_PROVISION_FAILED,
    "TenantStatusChanged": TENANT_STATUS,
    "TenantSettingsChanged": TENANT_SETTINGS,
    "TenantReinstated": TENANT_REINSTATE,
    "TenantAdopted": TENANT_ADOPT,
    "TenantAdoptionFailed": TENANT_ADOPT_FAILED,
    "TenantRestored": TENANT_RESTORE,
    "TenantRestoreUndone": RESTORE_UNDO,
    "TenantErased": TENANT_ERASE,
    "TenantMoved": TENANT_MOVE,
    "TenantMoveUndone": MOVE_UNDO,
}


def event_action(event_type: str, data: dict[str, Any]) -> str | None:
    """The audit action of a catalog event, or None when the event is no lifecycle change (maintenance, a drill's
    outcome: their accesses are audited where they happen)."""
    if event_type == "TenantStatusChanged" and data.get("new_status") == "deprovisioned":
        return TENANT_DEPROVISION
    return _EVENT_ACTIONS.get(event_type)


def event_backup(data: dict[str, Any]) -> str | None:
    """The backup an event names (a restore's, a reinstatement's), if any."""
    backup = data.get("backup") or data.get("undone_backup")
    return backup if isinstance(backup, str) else None


def backup_read_action(workflow_type: str | None) -> str:
    """What reading a backup's bytes is, by the workflow that reads them: a drill, or a restore."""
    return BACKUP_DRILL if workflow_type == "BackupDrillWorkflow" else BACKUP_RESTORE


def deletion_reason(workflow_type: str | None) -> str:
    """Why apply_retention deleted a backup: a prune asked for, or the retention that follows each backup."""
    return "prune" if (workflow_type or "").startswith("Prune") else "retention"


def schedule_actor(schedule_id: str) -> str:
    return f"schedule:{schedule_id}"


def workflow_actor(workflow_id: str) -> str:
    return f"workflow:{workflow_id}"


def run_actor(requested_by: object, scheduled_by: str | None) -> str | None:
    """Who a run was started for, from its own start: the memo its starter wrote, else the schedule that started
    it (TemporalScheduledById, set by Temporal). None: the run does not say (ask its parent, if it has one)."""
    if isinstance(requested_by, str) and requested_by.strip():
        return requested_by.strip()[:200]
    if scheduled_by:
        return schedule_actor(scheduled_by)
    return None


def local_actor() -> str:
    """`user@host` of this process: who runs the command line."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a container's arbitrary uid)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from now ('7d', '24h', '90m') or a date or time (ISO 8601; UTC unless it says)."""
    value = text.strip()
    try:
        return now - timedelta(seconds=parse_duration(value))
    except InvalidInput:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"invalid --since {text!r}: use a duration (7d, 24h, 30m) or a date or time (2026-01-15T08:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
