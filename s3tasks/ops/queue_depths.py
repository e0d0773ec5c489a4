"""Each queue's and its dead-letter queue's depth and oldest message age, read from a web
request for the admin's operations dashboard.

Depth is SQS's `GetQueueAttributes` (messages waiting, in flight, delayed). SQS has no
attribute for the age of the oldest message: that is CloudWatch's `AWS/SQS`
`ApproximateAgeOfOldestMessage`, which AWS publishes each minute for active queues (an
emulator publishes nothing: the age is then unknown, not an error). Every call has a short
timeout and no retry; a failure becomes the reason shown instead of the number, and once an
endpoint is found unreachable no further call is made to it in that read. Results are kept
`CACHE_SECONDS`, so an auto-refreshing page does not call AWS on every refresh.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from django.utils import timezone

from s3tasks import aws
from s3tasks.conf import get_settings
from s3tasks.exceptions import S3TasksConfigurationError
from s3tasks.models import Queue

CACHE_SECONDS = 5.0
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 3.0
AGE_LOOKBACK = timedelta(minutes=15)  # the newest age datapoint within this is shown
DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "RedrivePolicy",
]
CLOUDWATCH_QUERY_LIMIT = 500  # metric queries per GetMetricData call


@dataclass(frozen=True)
class WatchedQueue:
    """A queue the dashboard shows, from its `Queue` row (or the default queue's name)."""

    name: str
    region: str
    url: str = ""
    enabled: bool = True
    dead_letter_name: str = ""  # from the row; SQS's RedrivePolicy wins when it has one
    dead_letter_url: str = ""


@dataclass(frozen=True)
class QueueDepth:
    """One queue's figures; a `problem` says why they are missing."""

    name: str
    waiting: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    oldest_age: float | None = None  # seconds; None without a CloudWatch datapoint
    problem: str = ""  # why the depth is unknown
    age_problem: str = ""  # why the age is unknown (empty: CloudWatch has no datapoint)


@dataclass(frozen=True)
class QueueDepths:
    """A queue and its dead-letter queue (None when it has none)."""

    watched: WatchedQueue
    queue: QueueDepth
    dead_letter: QueueDepth | None = None


def watched_queues() -> list[WatchedQueue]:
    """Every `Queue` row that is no other row's dead-letter queue; the default queue when
    there is no row."""
    default_region = get_settings().REGION
    rows = list(Queue.objects.select_related("dead_letter_queue").order_by("name"))
    dead_letter_ids = {row.dead_letter_queue_id for row in rows}
    watched = []
    for row in rows:
        if row.pk in dead_letter_ids:
            continue
        dead_letter = row.dead_letter_queue
        watched.append(
            WatchedQueue(
                name=row.name,
                region=row.region or default_region,
                url=row.url,
                enabled=row.enabled,
                dead_letter_name=dead_letter.name if dead_letter else "",
                dead_letter_url=dead_letter.url if dead_letter else "",
            )
        )
    if not rows:
        watched.append(WatchedQueue(get_settings().DEFAULT_QUEUE, default_region))
    return watched


_cache: dict[Any, tuple[float, list[QueueDepths]]] = {}
_cache_lock = threading.Lock()


def read_queue_depths(watched: Sequence[WatchedQueue]) -> list[QueueDepths]:
    """The figures of `watched`, at most `CACHE_SECONDS` old."""
    key = (tuple(watched), get_settings().ENDPOINT_URL)
    now = time.monotonic()
    with _cache_lock:
        found = _cache.get(key)
    if found is not None and now - found[0] < CACHE_SECONDS:
        return found[1]
    readers: dict[str, _RegionReader] = {}
    result = [
        readers.setdefault(queue.region, _RegionReader(queue.region)).read(queue)
        for queue in watched
    ]
    for reader in readers.values():
        result = reader.with_ages(result)
    with _cache_lock:
        _cache.clear()  # one page's figures: an older key is never asked for again
        _cache[key] = (time.monotonic(), result)
    return result


def forget_queue_depths() -> None:
    """Drop the cached figures (tests; a page that must show the very latest)."""
    with _cache_lock:
        _cache.clear()


@cache
def _client_config() -> Any:
    from botocore.config import Config

    return Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"total_max_attempts": 1},
    )


class _RegionReader:
    """Reads the queues of one region; stops calling once the endpoint proved unreachable."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.down = ""  # why the endpoint cannot be reached, once it could not

    def client(self, service: str) -> Any:
        return aws.client(service, region_name=self.region, config=_client_config())

    def read(self, watched: WatchedQueue) -> QueueDepths:
        queue, dead_letter_name = self.depth(watched.name, watched.url)
        dead_letter_name = dead_letter_name or watched.dead_letter_name
        if not dead_letter_name:
            return QueueDepths(watched, queue)
        url = watched.dead_letter_url if dead_letter_name == watched.dead_letter_name else ""
        dead_letter, _ = self.depth(dead_letter_name, url)
        return QueueDepths(watched, queue, dead_letter)

    def depth(self, name: str, url: str) -> tuple[QueueDepth, str]:
        """The queue's depth and the name of the dead-letter queue its RedrivePolicy names."""
        if self.down:
            return QueueDepth(name, problem=self.down, age_problem=self.down), ""
        try:
            sqs = self.client("sqs")
            url = url or sqs.get_queue_url(QueueName=name)["QueueUrl"]
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=DEPTH_ATTRIBUTES)
        except Exception as exc:
            problem = self.failed(exc)
            return QueueDepth(name, problem=problem, age_problem=self.down), ""
        values = attributes.get("Attributes", {})
        depth = QueueDepth(
            name,
            waiting=_int(values.get("ApproximateNumberOfMessages")),
            in_flight=_int(values.get("ApproximateNumberOfMessagesNotVisible")),
            delayed=_int(values.get("ApproximateNumberOfMessagesDelayed")),
        )
        return depth, _dead_letter_name(values.get("RedrivePolicy", ""))

    def with_ages(self, found: list[QueueDepths]) -> list[QueueDepths]:
        """`found`, with the oldest-message age of this region's queues from CloudWatch."""
        mine = [f for f in found if f.watched.region == self.region]
        names = sorted(
            {d.name for f in mine for d in (f.queue, f.dead_letter) if d and not d.problem}
        )
        ages, problem = self.ages(names)

        def aged(depth: QueueDepth | None) -> QueueDepth | None:
            if depth is None or depth.problem:
                return depth
            return _replace_age(depth, ages.get(depth.name), problem)

        return [
            QueueDepths(f.watched, aged(f.queue), aged(f.dead_letter))  # type: ignore[arg-type]
            if f.watched.region == self.region
            else f
            for f in found
        ]

    def ages(self, names: Sequence[str]) -> tuple[dict[str, float | None], str]:
        """Each queue's newest `ApproximateAgeOfOldestMessage`, or why there is none."""
        if not names or self.down:
            return {}, self.down
        ages: dict[str, float | None] = {}
        end = timezone.now()
        try:
            cloudwatch = self.client("cloudwatch")
            for start in range(0, len(names), CLOUDWATCH_QUERY_LIMIT):
                chunk = names[start : start + CLOUDWATCH_QUERY_LIMIT]
                answer = cloudwatch.get_metric_data(
                    MetricDataQueries=[_age_query(f"q{i}", n) for i, n in enumerate(chunk)],
                    StartTime=end - AGE_LOOKBACK,
                    EndTime=end,
                    ScanBy="TimestampDescending",
                )
                for result in answer.get("MetricDataResults", []):
                    values = result.get("Values") or [None]
                    ages[chunk[int(result["Id"][1:])]] = values[0]
        except Exception as exc:
            return ages, self.failed(exc)
        return ages, ""

    def failed(self, exc: Exception) -> str:
        """What went wrong, in a line; an unreachable endpoint is not called again."""
        problem = _describe(exc)
        if _unreachable(exc):
            self.down = problem
        return problem


def _age_query(query_id: str, queue_name: str) -> dict[str, Any]:
    metric = {
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateAgeOfOldestMessage",
        "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
    }
    return {"Id": query_id, "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Maximum"}}


def _replace_age(depth: QueueDepth, age: float | None, problem: str) -> QueueDepth:
    return QueueDepth(
        depth.name,
        depth.waiting,
        depth.in_flight,
        depth.delayed,
        oldest_age=age,
        age_problem=problem,
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _dead_letter_name(redrive_policy: str) -> str:
    try:
        arn = json.loads(redrive_policy).get("deadLetterTargetArn", "")
    except (ValueError, AttributeError):
        return ""
    return str(arn).rsplit(":", 1)[-1]


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        return f"{code}: {message}" if code and message else code or message or str(exc)
    if isinstance(exc, S3TasksConfigurationError) and str(exc) == aws.MISSING_CREDENTIALS:
        return "no AWS credentials found"
    return str(exc) or type(exc).__name__


def _unreachable(exc: Exception) -> bool:
    from botocore.exceptions import ConnectionError, HTTPClientError, NoCredentialsError

    return isinstance(
        exc, ConnectionError | HTTPClientError | NoCredentialsError | S3TasksConfigurationError
    )
