"""Django models of s3tasks: AWS configuration (config), what happened (history), what the
workers report (worker), and the proxy that lists the operations dashboard (dashboard)."""

from s3tasks.models.backfill import Backfill
from s3tasks.models.config import (
    Bucket,
    HandlerBinding,
    NotificationRule,
    Queue,
    RulesVersion,
    Subscription,
    Topic,
)
from s3tasks.models.dashboard import OperationsDashboard
from s3tasks.models.history import EventRecord, HandlerRun, RunState
from s3tasks.models.outbox import OutboxKind, OutboxMessage
from s3tasks.models.ownership import ManagedResource
from s3tasks.models.worker import MessageFailure, WorkerHeartbeat

__all__ = [
    "Backfill",
    "Bucket",
    "EventRecord",
    "HandlerBinding",
    "HandlerRun",
    "ManagedResource",
    "MessageFailure",
    "NotificationRule",
    "OperationsDashboard",
    "OutboxKind",
    "OutboxMessage",
    "Queue",
    "RulesVersion",
    "RunState",
    "Subscription",
    "Topic",
    "WorkerHeartbeat",
]
