"""Django models of s3tasks: AWS configuration (config) and what happened (history)."""

from s3tasks.models.config import (
    Bucket,
    HandlerBinding,
    NotificationRule,
    Queue,
    RulesVersion,
    Subscription,
    Topic,
)
from s3tasks.models.history import EventRecord, HandlerRun, RunState

__all__ = [
    "Bucket",
    "EventRecord",
    "HandlerBinding",
    "HandlerRun",
    "NotificationRule",
    "Queue",
    "RulesVersion",
    "RunState",
    "Subscription",
    "Topic",
]
