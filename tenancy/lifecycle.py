"""The tenant status state machine: which status changes are allowed. Pure."""

from __future__ import annotations

from tenancy.errors import InvalidInput

# provisioning → active ⇄ inactive; active/inactive → suspended → active; any → deprovisioned.
ALLOWED: dict[str, set[str]] = {
    "provisioning": {"active", "failed", "deprovisioned"},
    "active": {"inactive", "suspended", "deprovisioned"},
    "inactive": {"active", "suspended", "deprovisioned"},
    "suspended": {"active", "deprovisioned"},
    "failed": {"deprovisioned", "provisioning"},
    "deprovisioned": set(),
}
# Statuses in which the tenant's own role may connect to its database.
CAN_CONNECT = {"active"}
# The one way back from deprovisioned: ReinstateTenantWorkflow, once the database is restored from a backup.
# Not in ALLOWED, so an ordinary status change (`tenants activate`) cannot bring back a tenant with no database.
REINSTATEMENT = ("deprovisioned", "active")


def check_transition(current: str, new: str) -> None:
    if new not in ALLOWED:
        raise InvalidInput(f"unknown status {new!r}")
    if (current, new) == REINSTATEMENT:
        raise InvalidInput(
            "a deprovisioned tenant has no database: bring it back from a backup with `tenants reinstate`"
        )
    if new not in ALLOWED.get(current, set()):
        allowed = ", ".join(sorted(ALLOWED.get(current, set()))) or "none"
        raise InvalidInput(f"a tenant that is {current} cannot become {new} (allowed: {allowed})")


def check_reinstatement(current: str, new: str) -> None:
    if (current, new) != REINSTATEMENT:
        raise InvalidInput(f"only a deprovisioned tenant can be reinstated; this one is {current}")
