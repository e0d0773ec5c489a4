"""The plan as values: typed steps (what to do, to what, whose it is, and the AWS change it
makes) and the plan itself. Nothing here calls AWS; `apply` runs the changes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

from s3tasks.provisioning.desired import DesiredState
from s3tasks.provisioning.notifications import NotificationEntry
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


# What apply does in AWS, one value per kind of call (apply.py has one function per type).
# Policies and notification configurations are merged with what is there at apply time.


@dataclass(frozen=True)
class CreateBucket:
    bucket: str


@dataclass(frozen=True)
class PutNotifications:
    """Write our entries into the bucket's configuration, keeping everyone else's."""

    bucket: str
    entries: tuple[NotificationEntry, ...]
    owned_ids: tuple[str, ...]  # our other entries: kept, or removed when `prune`
    prune: bool
    eventbridge: bool | None


@dataclass(frozen=True)
class PutCors:
    bucket: str
    rules: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class CreateQueue:
    name: str
    attributes: dict[str, str]  # our policy already merged in as `Policy`
    tags: dict[str, str]


@dataclass(frozen=True)
class UpdateQueue:
    """Set attributes; put our statements in and take `remove_sids` out of its policy."""

    url: str
    attributes: dict[str, str]
    statements: tuple[dict[str, Any], ...] = ()
    remove_sids: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteQueue:
    url: str


@dataclass(frozen=True)
class CreateTopic:
    name: str
    tags: dict[str, str]
    statements: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class UpdateTopic:
    """Put our statements in and take `remove_sids` out of the topic's policy."""

    arn: str
    statements: tuple[dict[str, Any], ...] = ()
    remove_sids: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteTopic:
    arn: str


@dataclass(frozen=True)
class Subscribe:
    topic_arn: str
    endpoint: str  # a queue ARN, or an HTTP(S) URL
    attributes: dict[str, str]
    protocol: str = "sqs"


@dataclass(frozen=True)
class UpdateSubscription:
    arn: str
    topic_arn: str
    endpoint: str
    attributes: dict[str, str]  # empty: nothing to set (an adoption that changes nothing)


@dataclass(frozen=True)
class Unsubscribe:
    arn: str


AwsChange: TypeAlias = (
    CreateBucket
    | PutNotifications
    | PutCors
    | CreateQueue
    | UpdateQueue
    | DeleteQueue
    | CreateTopic
    | UpdateTopic
    | DeleteTopic
    | Subscribe
    | UpdateSubscription
    | Unsubscribe
)


@dataclass(frozen=True)
class Step:
    """One change (or, when not `pending`, one note) with a message a human can review.

    `change` is what apply does in AWS (None for notes and for steps that only write or drop
    ownership records). `claims` are written as ours before the AWS call (so a crash right
    after it never leaves something we made unrecorded); `releases` are forgotten after the
    call succeeded.
    """

    action: Action
    resource_type: ResourceKind  # the row kind sync status is recorded on
    resource: str  # a name, or "topic → queue" for a subscription (display only)
    message: str
    change: AwsChange | None = None
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

    def to_dict(self) -> dict[str, Any]:
        """The step for `--format json`; `params` are the fields of its `change`."""
        return {
            "action": self.action,
            "resource_type": self.resource_type,
            "resource": self.resource,
            "message": self.message,
            "params": asdict(self.change) if self.change is not None else {},
            "pending": self.pending,
            "ownership": self.ownership,
            "claims": [asdict(c) for c in self.claims],
            "releases": [asdict(c) for c in self.releases],
        }


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    desired: DesiredState
    prune: bool = False
    buckets: tuple[str, ...] | None = None  # the --bucket scope; None = every bucket
    queue_urls: dict[str, str] = field(default_factory=dict)  # existing queues, by name
    adopt: bool = False
    # Each row's `pending_changes` when planning began: what a successful apply clears.
    pending_seen: dict[tuple[ResourceKind, str], int] = field(default_factory=dict)

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
            "steps": [s.to_dict() for s in self.steps],
        }
