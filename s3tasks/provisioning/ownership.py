"""Who owns what (pure): the ownership records as a value, and how the planner reads them.

A resource, notification entry or policy statement is ours when it is recorded in
`ManagedResource` (written by apply), or — for what s3tasks 0.1 made before records existed —
when it is recognised: queues/topics tagged `s3tasks:managed=true`, our Sids inside them,
subscriptions between two tagged ends, and, on a bucket with no recorded entries yet, entries
with an Id sync writes (for rules we have, or sending to a tagged queue/topic). Anything else
that exists is foreign: sync leaves it alone unless asked to adopt it (`--adopt`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from s3tasks.models import ManagedResource

# What a record is about, and how it came to be: the model's own choices, so the planner and
# the rows it writes share one set of values.
ResourceKind = ManagedResource.Kind
Origin = ManagedResource.Origin


class Ownership(StrEnum):
    """What the plan shows beside each step."""

    OURS = "ours"
    ADOPTED = "adopted"
    FOREIGN = "foreign"


class Decision(StrEnum):
    """What the planner does with one desired resource."""

    CREATE = "create"  # missing: create it (ours)
    MANAGE = "manage"  # recorded as created (or recognised) by s3tasks
    MANAGE_ADOPTED = "manage_adopted"  # recorded as adopted: change only what the row sets
    RECOGNISE = "recognise"  # made by s3tasks 0.1: record it, then manage it
    ADOPT = "adopt"  # foreign, --adopt given: record it, change only what the row sets
    FOREIGN = "foreign"  # foreign, no --adopt: leave it alone, block the plan

    @property
    def adopted(self) -> bool:
        """Someone else made it: defaults are never forced on it."""
        return self in (Decision.ADOPT, Decision.MANAGE_ADOPTED)

    @property
    def ownership(self) -> Ownership:
        if self.adopted:
            return Ownership.ADOPTED
        return Ownership.FOREIGN if self is Decision.FOREIGN else Ownership.OURS

    @property
    def origin(self) -> Origin:
        if self.adopted:
            return Origin.ADOPTED
        return Origin.RECOGNISED if self is Decision.RECOGNISE else Origin.CREATED


@dataclass(frozen=True)
class Claim:
    """One ownership record to write (before the AWS call) or remove (after it)."""

    kind: ResourceKind
    identifier: str
    origin: Origin = Origin.CREATED


def part_identifier(parent_arn: str, part: str) -> str:
    """A notification entry (`bucket ARN#Id`) or policy statement (`resource ARN#Sid`)."""
    return f"{parent_arn}#{part}"


def subscription_identifier(topic_arn: str, endpoint: str) -> str:
    # SNS keeps one subscription per topic + endpoint (a queue ARN or a URL), so the pair
    # names it before it exists.
    return f"{topic_arn}#{endpoint}"


_RULE_IDS = re.compile(r"^s3tasks-rules?-(\d+(?:-\d+)*)$")


def rule_ids_of_entry(entry_id: str) -> frozenset[int]:
    """The rule ids a `s3tasks-rule-7` / `s3tasks-rules-3-5` Id names (empty if none)."""
    match = _RULE_IDS.match(entry_id)
    return frozenset(int(i) for i in match.group(1).split("-")) if match else frozenset()


@dataclass(frozen=True)
class Ledger:
    """What the database records as ours, read once per plan (see `ledger.load_ledger`)."""

    records: Mapping[tuple[str, str], Origin] = field(default_factory=dict)
    rule_ids: Mapping[str, frozenset[int]] = field(default_factory=dict)  # bucket → rule pks

    def origin(self, kind: ResourceKind, identifier: str) -> Origin | None:
        return self.records.get((kind, identifier))

    def owns(self, kind: ResourceKind, identifier: str) -> bool:
        return (kind, identifier) in self.records

    def identifiers(self, kind: ResourceKind) -> list[str]:
        return sorted(i for k, i in self.records if k == kind)

    def parts(self, kind: ResourceKind, parent_arn: str) -> set[str]:
        """The recorded Ids/Sids inside one bucket/queue/topic."""
        prefix = f"{parent_arn}#"
        return {i[len(prefix) :] for k, i in self.records if k == kind and i.startswith(prefix)}

    def owned_parts(self, parent_arn: str) -> list[Claim]:
        """Records of a resource's parts: its entries or statements, and for a topic its
        subscriptions (all released with the resource)."""
        prefix = f"{parent_arn}#"
        return [
            Claim(ResourceKind(k), i, o)
            for (k, i), o in sorted(self.records.items())
            if i.startswith(prefix)
        ]


def decide(*, exists: bool, recorded: Origin | None, recognised: bool, adopt: bool) -> Decision:
    """The ownership decision for one desired resource (see the module docstring)."""
    if not exists:
        return Decision.CREATE
    if recorded is Origin.ADOPTED:
        return Decision.MANAGE_ADOPTED
    if recorded is not None:
        return Decision.MANAGE
    if recognised:
        return Decision.RECOGNISE
    return Decision.ADOPT if adopt else Decision.FOREIGN


@dataclass(frozen=True)
class SeenEntry:
    """An unrecorded notification entry as read from a bucket."""

    bucket: str
    bucket_arn: str
    id: str
    destination: str  # queue/topic ARN


def entry_is_recognised(
    entry: SeenEntry, ledger: Ledger, desired_ids: Iterable[str], tagged: Iterable[str]
) -> bool:
    """An unrecorded entry made by s3tasks 0.1. Only on a bucket with no recorded entries yet
    (after its first sync the records are the whole truth), and only an Id sync writes: one
    it is about to write, or `s3tasks-rule(s)-<ids>` naming rules of this bucket or sending
    to a queue/topic tagged `s3tasks:managed` (a rule deleted before the upgrade)."""
    if ledger.parts(ResourceKind.NOTIFICATION, entry.bucket_arn):
        return False
    if entry.id in set(desired_ids):
        return True
    ids = rule_ids_of_entry(entry.id)
    if not ids:
        return False
    return ids <= ledger.rule_ids.get(entry.bucket, frozenset()) or entry.destination in set(tagged)


class LedgerWriter(Protocol):
    """Where apply writes ownership (the database in production, a dict in pure tests)."""

    def claim(self, claims: Iterable[Claim], region: str) -> list[Claim]:
        """Record these as ours; return the ones that were not recorded before."""
        ...

    def release(self, claims: Iterable[Claim]) -> None:
        """Forget these records."""
        ...


@dataclass
class MemoryLedger:
    """A `LedgerWriter` in a dict: for pure tests and for `execute` without a database."""

    records: dict[tuple[str, str], Origin] = field(default_factory=dict)

    def claim(self, claims: Iterable[Claim], region: str) -> list[Claim]:
        new = [c for c in claims if (c.kind, c.identifier) not in self.records]
        for c in claims:
            self.records.setdefault((c.kind, c.identifier), c.origin)
        return new

    def release(self, claims: Iterable[Claim]) -> None:
        for c in claims:
            self.records.pop((c.kind, c.identifier), None)

    def snapshot(self, rule_ids: Mapping[str, frozenset[int]] | None = None) -> Ledger:
        return Ledger(dict(self.records), dict(rule_ids or {}))
