"""The callables behind `manage.py sync_notifications` and the admin's sync action.

`compute_plan()` reads the models, the ownership records and AWS and returns a `Plan` (changes
nothing); `apply_plan(plan)` executes it, recording what s3tasks owns as it goes and the
outcome on the models; `sync()` does both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from s3tasks.conf import get_settings
from s3tasks.exceptions import ProvisioningError
from s3tasks.provisioning.apply import ApplyResult, blocked_message, execute, explain_aws_error
from s3tasks.provisioning.current import read_account, read_current
from s3tasks.provisioning.desired import build_desired
from s3tasks.provisioning.iam import operator_policy, worker_policy
from s3tasks.provisioning.ledger import DatabaseLedger, load_ledger
from s3tasks.provisioning.model_rows import load_rows
from s3tasks.provisioning.ownership import ResourceKind
from s3tasks.provisioning.plan import Plan, compute_steps
from s3tasks.provisioning.status import pending_changes_now, record_result

SERVICES = ("s3", "sqs", "sns", "sts")


@dataclass(frozen=True)
class SyncResult:
    plan: Plan
    result: ApplyResult | None = None  # None for a dry run

    @property
    def ok(self) -> bool:
        return self.result is None or self.result.ok


def aws_clients() -> dict[str, Any]:
    """The boto3 clients sync uses, from `S3TASKS` (region, endpoint)."""
    from s3tasks.aws import client

    return {name: client(name) for name in SERVICES}


def _check_scope(buckets: list[str] | None, known: set[str]) -> tuple[str, ...] | None:
    if buckets is None:
        return None
    unknown = sorted(set(buckets) - known)
    if unknown:
        raise ProvisioningError(
            f"No Bucket row named {', '.join(map(repr, unknown))}; known buckets: "
            f"{', '.join(sorted(known)) or 'none'}. Add it in the admin or bind a handler to it."
        )
    return tuple(dict.fromkeys(buckets))


def compute_plan(
    buckets: list[str] | None = None,
    *,
    prune: bool = False,
    adopt: bool = False,
    clients: dict[str, Any] | None = None,
) -> Plan:
    """Compare the models and the ownership records with AWS and return the ordered plan
    (nothing is changed). `adopt` takes over existing resources the models need that s3tasks
    did not make; without it they block the plan (`plan.blocked`).

    Raises `OverlappingRules` (rules S3 would reject), `S3TasksConfigurationError` (FIFO
    destinations, foreign regions) or `ProvisioningError` (AWS unreachable, missing bucket).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    conf = get_settings()
    pending_seen = pending_changes_now()  # before the rows: an edit in between stays pending
    rows = load_rows()
    ledger = load_ledger()
    scope = _check_scope(buckets, {b.name for b in rows.buckets})
    clients = clients or aws_clients()
    try:
        account = read_account(clients["sts"], conf.REGION)
        desired = build_desired(
            rows,
            default_queue=conf.DEFAULT_QUEUE,
            account=account,
            buckets=list(scope) if scope is not None else None,
        )
        current = read_current(
            desired,
            clients,
            all_buckets=scope is None,
            recorded_queues=ledger.identifiers(ResourceKind.QUEUE),
            recorded_topics=ledger.identifiers(ResourceKind.TOPIC),
        )
    except (ClientError, BotoCoreError) as exc:
        raise explain_aws_error(exc, "read the current AWS state") from exc
    plan = compute_steps(desired, current, ledger=ledger, prune=prune, adopt=adopt, buckets=scope)
    return replace(plan, pending_seen=pending_seen)


def apply_plan(plan: Plan, *, clients: dict[str, Any] | None = None) -> ApplyResult:
    """Execute the plan's pending steps, recording what becomes ours (or stops being ours)
    around each step, then the sync status on the models.

    Never raises for an AWS error: the failure is in the result (and on the models). Raises
    `ProvisioningError` for a blocked plan (foreign resources; nothing is changed).
    """

    if plan.blocked:
        raise ProvisioningError(blocked_message(plan))
    result = execute(plan, clients or aws_clients(), DatabaseLedger())
    record_result(plan, result)
    return result


def sync(
    buckets: list[str] | None = None,
    *,
    prune: bool = False,
    adopt: bool = False,
    dry_run: bool = False,
) -> SyncResult:
    """Plan, then apply unless `dry_run`. Applying a blocked plan (foreign resources the
    models need, without `adopt`) raises `ProvisioningError`; a dry run returns it."""
    plan = compute_plan(buckets, prune=prune, adopt=adopt)
    if dry_run:
        return SyncResult(plan)
    return SyncResult(plan, apply_plan(plan))


def iam_policies(
    buckets: list[str] | None = None,
    *,
    publish_targets: list[str] | tuple[str, ...] = (),
    clients: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`{"worker": {...}, "operator": {...}}`: the least-privilege policies for the configured
    queues, topics and buckets (the account id comes from STS)."""
    from botocore.exceptions import BotoCoreError, ClientError

    conf = get_settings()
    rows = load_rows()
    scope = _check_scope(buckets, {b.name for b in rows.buckets})
    clients = clients or aws_clients()
    try:
        account = read_account(clients["sts"], conf.REGION)
    except (ClientError, BotoCoreError) as exc:
        raise explain_aws_error(exc, "read the account id") from exc
    desired = build_desired(
        rows,
        default_queue=conf.DEFAULT_QUEUE,
        account=account,
        buckets=list(scope) if scope is not None else None,
    )
    bindings = [b for b in rows.bindings if scope is None or b.bucket in scope]
    return {
        "worker": worker_policy(desired, bindings, publish_targets),
        "operator": operator_policy(desired),
    }
