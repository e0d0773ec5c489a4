"""Plan: desired state + current state + ownership records → ordered, typed steps (pure).

Only `pending` steps are executed by apply. Without `prune`, stale things that are ours appear
as notes ("would remove … (use --prune)"). Something the models need that exists and is not
ours is a blocking `foreign` step: apply refuses to run until it is adopted (`--adopt`) or the
models stop needing it. See `ownership` for how "ours" is decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s3tasks.exceptions import OverlappingRules, ProvisioningError
from s3tasks.provisioning.current import CurrentBucket, CurrentState
from s3tasks.provisioning.desired import DesiredBucket, DesiredState
from s3tasks.provisioning.notifications import (
    OWNED_ID_PREFIX,
    configuration_clashes,
    merge_configuration,
    normalize_s3_entry,
    queue_and_topic_entries,
)
from s3tasks.provisioning.ownership import (
    Claim,
    Ledger,
    Origin,
    Ownership,
    ResourceKind,
    SeenEntry,
    entry_is_recognised,
    part_identifier,
)
from s3tasks.provisioning.plan_queues import foreign_step, queue_steps, topic_steps
from s3tasks.provisioning.plan_stale import resource_removals, vanished_records
from s3tasks.provisioning.plan_subscriptions import subscription_steps
from s3tasks.provisioning.steps import (
    Action,
    CreateBucket,
    Plan,
    PutCors,
    PutNotifications,
    Step,
)

__all__ = ["Plan", "Step", "compute_steps"]

BUCKET = ResourceKind.BUCKET
ENTRY = ResourceKind.NOTIFICATION


@dataclass(frozen=True)
class Context:
    """What every bucket's planning needs besides the bucket itself."""

    ledger: Ledger
    tagged: frozenset[str]  # ARNs of queues/topics tagged s3tasks:managed
    prune: bool
    adopt: bool


@dataclass(frozen=True)
class EntryOwnership:
    """Whose each queue/topic entry of one bucket is, as the planner needs it."""

    present: dict[str, dict[str, Any]]  # Id → entry, as read from S3
    recorded: frozenset[str]  # Ids recorded as ours
    recognised: frozenset[str]  # Ids made by s3tasks 0.1 (unrecorded, see `ownership`)
    taken: tuple[str, ...]  # Ids we write that exist and are not ours (adopt or block)

    @property
    def owned(self) -> frozenset[str]:
        return (frozenset(self.present) & self.recorded) | self.recognised


def _destination(entry: dict[str, Any]) -> str:
    return str(entry.get("QueueArn") or entry.get("TopicArn") or "")


def _entry_ownership(
    bucket: DesiredBucket, config: dict[str, Any], context: Context
) -> EntryOwnership:
    present = queue_and_topic_entries(config)
    desired_ids = {e.id for e in bucket.notifications}
    recorded = frozenset(context.ledger.parts(ENTRY, bucket.arn))
    recognised = frozenset(
        i
        for i in set(present) - recorded
        if entry_is_recognised(
            SeenEntry(bucket.name, bucket.arn, i, _destination(present[i])),
            context.ledger,
            desired_ids,
            context.tagged,
        )
    )
    owned = (frozenset(present) & recorded) | recognised
    taken = tuple(sorted((desired_ids & set(present)) - owned))
    return EntryOwnership(present, recorded, recognised, taken)


def _entry_claims(bucket: DesiredBucket, entries: EntryOwnership, ledger: Ledger) -> list[Claim]:
    """Records for our entries not recorded yet: desired ones (written now), taken-over ones
    (adopted) and recognised ones (made by an earlier release)."""
    claims = []
    for entry_id in sorted({e.id for e in bucket.notifications} | entries.recognised):
        identifier = part_identifier(bucket.arn, entry_id)
        if ledger.owns(ENTRY, identifier):
            continue
        origin = Origin.CREATED
        if entry_id in entries.taken:
            origin = Origin.ADOPTED
        elif entry_id in entries.recognised:
            origin = Origin.RECOGNISED
        claims.append(Claim(ENTRY, identifier, origin))
    return claims


def _entry_messages(bucket: DesiredBucket, entries: EntryOwnership) -> list[str]:
    messages = []
    for entry in bucket.notifications:
        found = entries.present.get(entry.id)
        if found is None:
            messages.append(f"add {entry.describe()}")
        elif entry.id in entries.taken:
            messages.append(f"adopt and replace entry {entry.describe()}")
        elif normalize_s3_entry(found) != normalize_s3_entry(entry.to_s3()):
            messages.append(f"update {entry.describe()}")
    return messages


def _check_clashes(
    bucket: DesiredBucket, current: dict[str, Any], owned: frozenset[str], prune: bool
) -> None:
    """Raise `OverlappingRules` if the configuration we would write is one S3 rejects."""
    desired_ids = {e.id for e in bucket.notifications}
    merged = merge_configuration(
        current, bucket.notifications, owned_ids=owned, prune=prune, eventbridge=bucket.eventbridge
    )
    clashes = configuration_clashes(merged, owned | desired_ids)
    if clashes:
        stale = sorted(owned - desired_ids)
        if stale and not prune:
            clashes.append(f"stale s3tasks entries {stale} are only removed with --prune")
        raise OverlappingRules([f"bucket {bucket.name!r}: {c}" for c in clashes])


def _notes(bucket: DesiredBucket, entries: EntryOwnership, prune: bool) -> list[Step]:
    """Stale entries of ours kept without --prune; entries that only look like ours."""
    desired_ids = {e.id for e in bucket.notifications}
    stale = [] if prune else sorted(entries.owned - desired_ids)
    notes = [
        Step(
            Action.KEEP_STALE,
            BUCKET,
            bucket.name,
            f"would remove stale entry {i} from bucket {bucket.name} (use --prune)",
            pending=False,
        )
        for i in stale
    ]
    lookalikes = sorted(
        i
        for i in entries.present
        if i.startswith(OWNED_ID_PREFIX) and i not in entries.owned and i not in desired_ids
    )
    return notes + [
        Step(
            Action.KEEP_FOREIGN,
            BUCKET,
            bucket.name,
            f"keep entry {i} on bucket {bucket.name}: its Id looks like s3tasks' but s3tasks has "
            "no record of writing it, so sync never changes or prunes it",
            pending=False,
            ownership=Ownership.FOREIGN,
        )
        for i in lookalikes
    ]


def _notification_steps(
    bucket: DesiredBucket, found: CurrentBucket, context: Context
) -> list[Step]:
    current = found.notification
    entries = _entry_ownership(bucket, current, context)
    if entries.taken and not context.adopt:
        message = (
            f"Bucket {bucket.name} has notification entries {', '.join(entries.taken)} with Ids "
            "sync writes, but s3tasks has no record of writing them: left unchanged. Run sync "
            "with --adopt to replace them with s3tasks' entries."
        )
        return [foreign_step(BUCKET, bucket.name, message)]
    _check_clashes(bucket, current, entries.owned, context.prune)
    desired_ids = {e.id for e in bucket.notifications}
    stale = sorted(entries.owned - desired_ids) if context.prune else []
    messages = _entry_messages(bucket, entries) + [f"remove stale entry {i}" for i in stale]
    if bucket.eventbridge is not None and bucket.eventbridge != (
        "EventBridgeConfiguration" in current
    ):
        messages.append(f"turn EventBridge delivery {'on' if bucket.eventbridge else 'off'}")
    gone = sorted((entries.recorded - set(entries.present)) - desired_ids)
    step = _entries_step(bucket, entries, messages, context, releases=gone + stale)
    return ([step] if step else []) + _notes(bucket, entries, context.prune)


def _entries_step(
    bucket: DesiredBucket,
    entries: EntryOwnership,
    messages: list[str],
    context: Context,
    releases: list[str],
) -> Step | None:
    """The write of the bucket's configuration, or, when nothing in S3 changes, the records
    to write (entries recognised from 0.1) or to drop (entries gone from S3)."""
    claims = _entry_claims(bucket, entries, context.ledger)
    common: dict[str, Any] = {
        "ownership": Ownership.ADOPTED if entries.taken else Ownership.OURS,
        "claims": tuple(claims),
        "releases": tuple(Claim(ENTRY, part_identifier(bucket.arn, i)) for i in releases),
    }
    if messages:
        change = PutNotifications(
            bucket.name,
            bucket.notifications,
            tuple(sorted(entries.owned)),
            context.prune,
            bucket.eventbridge,
        )
        text = f"bucket {bucket.name} notifications: " + "; ".join(messages)
        return Step(Action.PUT_NOTIFICATIONS, BUCKET, bucket.name, text, change, **common)
    if claims or releases:
        text = _record_message(bucket.name, sorted(entries.recognised), releases)
        return Step(Action.RECORD, BUCKET, bucket.name, text, **common)
    return None


def _record_message(bucket: str, recognised: list[str], gone: list[str]) -> str:
    parts = []
    if recognised:
        parts.append(f"{', '.join(recognised)} as s3tasks' (made by an earlier release)")
    if gone:
        parts.append(f"forget {', '.join(gone)} (gone from S3)")
    return f"record notification entries of bucket {bucket}: " + "; ".join(parts)


def _bucket_steps(bucket: DesiredBucket, found: CurrentBucket, context: Context) -> list[Step]:
    steps = []
    if not found.exists:
        if not bucket.create_if_missing:
            raise ProvisioningError(
                f"Bucket {bucket.name!r} does not exist and is not marked create_if_missing; "
                "create it, tick 'create if missing' on the bucket, or pass --bucket to sync "
                "other buckets only."
            )
        steps.append(
            Step(
                Action.CREATE_BUCKET,
                BUCKET,
                bucket.name,
                f"create S3 bucket {bucket.name}",
                CreateBucket(bucket.name),
                claims=(Claim(BUCKET, bucket.arn),),
            )
        )
        found = CurrentBucket(bucket.name, exists=False)
    if bucket.manage_notifications:
        steps += _notification_steps(bucket, found, context)
    if bucket.cors_rules and list(found.cors_rules or ()) != list(bucket.cors_rules):
        steps.append(
            Step(
                Action.PUT_CORS,
                BUCKET,
                bucket.name,
                f"set CORS on bucket {bucket.name} ({len(bucket.cors_rules)} rule(s))",
                PutCors(bucket.name, bucket.cors_rules),
            )
        )
    return steps


def compute_steps(
    desired: DesiredState,
    current: CurrentState,
    *,
    ledger: Ledger | None = None,
    prune: bool = False,
    adopt: bool = False,
    buckets: tuple[str, ...] | None = None,
) -> Plan:
    """The ordered plan: buckets exist → queues → topics → subscriptions → bucket
    notifications and CORS (destinations first: S3 validates them) → removals; then the
    notes, then the foreign resources that block apply."""
    ledger = ledger or Ledger()
    tagged = {desired.account.sqs_arn(q.name) for q in current.queues.values() if q.tagged}
    tagged |= {t.arn for t in current.topics.values() if t.tagged}
    context = Context(ledger, frozenset(tagged), prune, adopt)
    created, configured = [], []
    for bucket in desired.buckets:
        steps = _bucket_steps(bucket, current.buckets[bucket.name], context)
        created += [s for s in steps if s.action is Action.CREATE_BUCKET]
        configured += [s for s in steps if s.action is not Action.CREATE_BUCKET]
    subscriptions = subscription_steps(desired, current, ledger, prune=prune, adopt=adopt)
    removing = (Action.UNSUBSCRIBE, Action.RELEASE_SUBSCRIPTION)
    ordered = created + queue_steps(desired, current, ledger, adopt)
    ordered += topic_steps(desired, current, ledger, adopt)
    ordered += [s for s in subscriptions if s.action not in removing]
    ordered += configured
    ordered += [s for s in subscriptions if s.action in removing]
    if buckets is None:  # stale resources are only looked for in a run over every bucket
        ordered += resource_removals(desired, current, ledger, prune)
        ordered += vanished_records(desired, current, ledger)
    steps = [s for s in ordered if s.pending]
    steps += [s for s in ordered if not s.pending and not s.blocking]
    steps += [s for s in ordered if s.blocking]
    urls = {name: q.url for name, q in current.queues.items()}
    return Plan(tuple(steps), desired, prune, buckets, urls, adopt)
