"""The plan as values: typed steps (what to do, to what, whose it is) and the plan itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from s3tasks.provisioning.desired import DesiredState
from s3tasks.provisioning.ownership import Claim, Ownership, ResourceKind


class Action(StrEnum):
    """What a step does; apply has one function per pending action."""

    CREATE_BUCKET = "create_bucket"
    CREATE_QUEUE = "create_queue"
    UPDATE_QUEUE = "update_queue"
    ADOPT_QUEUE = "adopt_queue"
    RELEASE_QUEUE = "release_queue"  # adopted, pruned: our statements out, records dropped
    DELETE_QUEUE = "delete_queue"
    CREATE_TOPIC = "create_topic"
    UPDATE_TOPIC = "update_topic"
    ADOPT_TOPIC = "adopt_topic"
    RELEASE_TOPIC = "release_topic"
    DELETE_TOPIC = "delete_topic"
    SUBSCRIBE = "subscribe"
    UPDATE_SUBSCRIPTION = "update_subscription"
    ADOPT_SUBSCRIPTION = "adopt_subscription"
    RELEASE_SUBSCRIPTION = "release_subscription"
    UNSUBSCRIBE = "unsubscribe"
    PUT_NOTIFICATIONS = "put_notifications"
    PUT_CORS = "put_cors"
    RECORD = "record"  # ownership records only (made by an earlier release, or gone from AWS)
    # Notes (never pending):
    KEEP_STALE = "keep_stale"  # ours, no longer in the models: removed with --prune
    KEEP_FOREIGN = "keep_foreign"  # looks like ours, is not recorded as ours: never touched
    FOREIGN = "foreign"  # exists, not ours, and the models need it: blocks until --adopt


SYMBOLS = {
    Action.CREATE_BUCKET: "+",
    Action.CREATE_QUEUE: "+",
    Action.CREATE_TOPIC: "+",
    Action.SUBSCRIBE: "+",
    Action.DELETE_QUEUE: "-",
    Action.DELETE_TOPIC: "-",
    Action.UNSUBSCRIBE: "-",
    Action.RELEASE_QUEUE: "-",
    Action.RELEASE_TOPIC: "-",
    Action.RELEASE_SUBSCRIPTION: "-",
    Action.RECORD: "=",
    Action.KEEP_STALE: "!",
    Action.KEEP_FOREIGN: "!",
    Action.FOREIGN: "✗",
}


@dataclass(frozen=True)
class Step:
    """One change (or, when not `pending`, one note) with a message a human can review.

    `claims` are written as ours before the AWS call (so a crash right after it never leaves
    something we made unrecorded); `releases` are forgotten after the call succeeded.
    """

    action: Action
    resource_type: ResourceKind  # the row kind sync status is recorded on
    resource: str  # a name, or "topic → queue" for a subscription (display only)
    message: str
    params: dict[str, Any] = field(default_factory=dict)
    pending: bool = True
    ownership: Ownership = Ownership.OURS
    claims: tuple[Claim, ...] = ()
    releases: tuple[Claim, ...] = ()

    @property
    def blocking(self) -> bool:
        return self.action is Action.FOREIGN

    @property
    def symbol(self) -> str:
        return SYMBOLS.get(self.action, "~" if self.pending else "!")


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    desired: DesiredState
    prune: bool = False
    buckets: tuple[str, ...] | None = None  # the --bucket scope; None = every bucket
    queue_urls: dict[str, str] = field(default_factory=dict)  # existing queues, by name
    adopt: bool = False

    @property
    def has_changes(self) -> bool:
        return any(s.pending for s in self.steps)

    @property
    def changes(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.pending)

    @property
    def notes(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if not s.pending and not s.blocking)

    @property
    def foreign(self) -> tuple[Step, ...]:
        """Resources the models need that exist and are not ours: apply refuses to run."""
        return tuple(s for s in self.steps if s.blocking)

    @property
    def blocked(self) -> bool:
        return bool(self.foreign)

    def to_dict(self) -> dict[str, Any]:
        return {
            "has_changes": self.has_changes,
            "blocked": self.blocked,
            "prune": self.prune,
            "adopt": self.adopt,
            "buckets": list(self.buckets) if self.buckets is not None else None,
            "account": self.desired.account.id,
            "region": self.desired.account.region,
            "steps": [asdict(s) for s in self.steps],
        }
