"""When a tenant's lock may be taken over from its holder, and when a holder renews its lease.

A lock row names its holder's Temporal namespace, workflow and run, and a lease. Two deployments (two
namespaces, or two Temporal clusters) may share one catalog, so a holder this worker cannot find is not a holder
that has ended: "not found" proves nothing. A lock is taken over only when

- its holder's run is found, in the holder's own namespace, and has ended (completed, failed, cancelled,
  terminated, timed out, or continued as new: the run the lock names is over); or
- its holder cannot be seen (not found, or a namespace this cluster does not know) and its lease has expired.

A holder found running keeps the lock whatever its lease says: the lease only speaks for holders out of sight.

Why a live holder never loses it. The lease is renewed while any heartbeating activity of the holding run (or of
a child run working under its parent's lock, such as the backup of a deprovisioning) runs, at most every quarter
of the lease per worker, and when the holder takes the lock again. Between those, a live holder goes without a
renewal only while its workflow is between heartbeating activities: a retry backoff (at most 5 minutes,
workflows/options.py), a non-heartbeating activity (at most 10 minutes an attempt), a short step, plus up to a
quarter of the lease of renewal throttling. The default lease (TENANTS_LOCK_LEASE_SECONDS, 1 hour) covers that
several times over; what it cannot cover is every worker of the holder's deployment being down for longer than
the lease: a deployment that may be down that long while another one shares its catalog sets a longer lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

# What the holder's namespace says of the run a lock names.
HolderState = Literal["running", "closed", "unknown"]


def holder_namespace(recorded: str | None, own: str) -> str:
    """Rows written before locks named their namespace were written by this deployment's workers."""
    return recorded or own


def is_same_holder(row_namespace: str | None, row_workflow_id: str, namespace: str, workflow_id: str) -> bool:
    """The lock is already this workflow's (a retried or repeated take, or a child working under its parent's
    lock): the same workflow id in the same namespace. The same id in another deployment is another holder."""
    return row_workflow_id == workflow_id and holder_namespace(row_namespace, namespace) == namespace


def lease_expired(lease_until: datetime | None, acquired_at: datetime, lease: timedelta, now: datetime) -> bool:
    """Whether the holder's lease ran out. A row from before leases counts one lease from when it was taken (a
    live holder's next heartbeat renews it), so a lock left by a run gone from Temporal is not held forever."""
    until = lease_until if lease_until is not None else acquired_at + lease
    return until <= now


def may_take_over(state: HolderState, expired: bool) -> bool:
    """A holder proven ended gives the lock up; a running one keeps it; one out of sight, when its lease ran out."""
    if state == "closed":
        return True
    if state == "running":
        return False
    return expired


def renewal_due(last_renewed: float | None, now: float, lease_seconds: float) -> bool:
    """A run's lease is renewed at most every quarter of the lease (times in seconds, one clock): three renewals
    may fail before a live holder's lease runs out."""
    return last_renewed is None or now - last_renewed >= lease_seconds / 4
