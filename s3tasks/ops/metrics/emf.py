"""The Lambda entrypoint's metrics as CloudWatch Embedded Metric Format (EMF) lines.

Lambda sends whatever a function prints to CloudWatch Logs, and CloudWatch turns a line that
is an EMF document (a JSON object whose `_aws.CloudWatchMetrics` names metrics kept at its
root) into metrics, with no API call and no dependency: the way aws-lambda-powertools does it.
One line per invocation holds its counts and the durations and lags of its runs; a metric
holds at most 100 values per line (the specification's limit), so an invocation with more
runs adds a line per further 100 values.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import IO, Any

from s3tasks.ops.metrics.runs import ATTEMPT_OUTCOMES, RunObservation, add_sink

MAX_VALUES = 100  # values of one metric in one document
# message outcomes (`processing.messages.Status` values and `released`) → metric names
MESSAGE_OUTCOMES = {
    "handled": "MessagesHandled",
    "test_event": "MessagesHandled",
    "failed": "MessagesFailed",
    "failed_permanently": "MessagesFailedPermanently",
    "deferred": "MessagesDeferred",
    "unavailable": "MessagesUnavailable",
    "malformed": "MessagesMalformed",
    "released": "MessagesReleased",
}
DELETED_OUTCOMES = frozenset({"handled", "test_event", "failed_permanently"})
RUN_METRICS = {
    "succeeded": "HandlerRunsSucceeded",
    "retrying": "HandlerRunsRetrying",
    "failed": "HandlerRunsFailed",
}
COUNTS = (
    "MessagesReceived",
    "MessagesDeleted",
    *dict.fromkeys(MESSAGE_OUTCOMES.values()),
    *RUN_METRICS.values(),
)
VALUES = {"HandlerDuration": "Seconds", "EventLag": "Seconds"}

_current: ContextVar[InvocationMetrics | None] = ContextVar("s3tasks_emf", default=None)


@dataclass
class InvocationMetrics:
    """What one invocation did, until `documents()` writes it down."""

    namespace: str
    dimensions: dict[str, str]
    properties: dict[str, Any] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    handlers: dict[str, Counter[str]] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=lambda: {n: [] for n in VALUES})

    def count_messages(self, outcomes: Iterable[str]) -> None:
        """One received message per outcome (a `Status` value or `released`)."""
        for outcome in outcomes:
            self.counts["MessagesReceived"] += 1
            self.counts[MESSAGE_OUTCOMES[outcome]] += 1
            if outcome in DELETED_OUTCOMES:
                self.counts["MessagesDeleted"] += 1

    def observe_run(self, seen: RunObservation) -> None:
        self.counts[RUN_METRICS[seen.outcome]] += 1
        self.handlers.setdefault(seen.handler, Counter())[seen.outcome] += 1
        if seen.duration_seconds is not None:
            self.values["HandlerDuration"].append(round(seen.duration_seconds, 6))
        if seen.lag_seconds is not None:
            self.values["EventLag"].append(round(seen.lag_seconds, 6))

    def documents(self, timestamp_ms: int | None = None) -> list[dict[str, Any]]:
        """The EMF documents: the first with every count, then more for values past 100."""
        timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        first = {name: self.counts[name] for name in COUNTS}
        first.update({name: values[:MAX_VALUES] for name, values in self.values.items() if values})
        handlers = {
            name: {outcome: counts[outcome] for outcome in ATTEMPT_OUTCOMES}
            for name, counts in sorted(self.handlers.items())
        }
        documents = [self._document(timestamp, first, {**self.properties, "handlers": handlers})]
        longest = max(len(values) for values in self.values.values())
        for start in range(MAX_VALUES, longest, MAX_VALUES):
            more = {
                name: values[start : start + MAX_VALUES]
                for name, values in self.values.items()
                if values[start : start + MAX_VALUES]
            }
            documents.append(self._document(timestamp, more, self.properties))
        return documents

    def _document(
        self, timestamp: int, metrics: dict[str, Any], properties: dict[str, Any]
    ) -> dict[str, Any]:
        definitions = [{"Name": name, "Unit": VALUES.get(name, "Count")} for name in metrics]
        directive = {
            "Namespace": self.namespace,
            "Dimensions": [sorted(self.dimensions)],
            "Metrics": definitions,
        }
        return {
            **properties,
            "_aws": {"Timestamp": timestamp, "CloudWatchMetrics": [directive]},
            **self.dimensions,
            **metrics,
        }


def current() -> InvocationMetrics | None:
    """The metrics of the invocation under way in this context, if any."""
    return _current.get()


def count_messages(outcomes: Iterable[str]) -> None:
    """Count messages in the invocation under way (nothing when EMF is off)."""
    metrics = _current.get()
    if metrics is not None:
        metrics.count_messages(outcomes)


def _observe(seen: RunObservation) -> None:
    metrics = _current.get()
    if metrics is not None:
        metrics.observe_run(seen)


@contextmanager
def invocation(
    namespace: str | None, context: Any = None, stream: IO[str] | None = None
) -> Iterator[InvocationMetrics | None]:
    """Collect one invocation's metrics and print them as EMF lines when it ends, even when
    it raises. `namespace` None turns EMF off."""
    if namespace is None:
        yield None
        return
    add_sink(_observe)
    metrics = InvocationMetrics(
        namespace=namespace,
        dimensions={"FunctionName": function_name(context)},
        properties=_request_properties(context),
    )
    token = _current.set(metrics)
    try:
        yield metrics
    finally:
        _current.reset(token)
        write(metrics.documents(), stream or sys.stdout)


def write(documents: Sequence[dict[str, Any]], stream: IO[str]) -> None:
    """One compact JSON object per line, as CloudWatch Logs expects each EMF event."""
    for document in documents:
        stream.write(json.dumps(document, separators=(",", ":")) + "\n")
    stream.flush()


def function_name(context: Any) -> str:
    """The dimension value: the function's name (context, then Lambda's environment)."""
    name = getattr(context, "function_name", None) or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    return str(name or "unknown")


def _request_properties(context: Any) -> dict[str, Any]:
    request_id = getattr(context, "aws_request_id", None)
    return {"requestId": str(request_id)} if request_id else {}
