"""Chaos runs: real `sqs_worker` processes drain S3 events from moto's server while something
breaks (kill -9, a database outage), and the outcome is counted from the outside.

Shared by tests/test_chaos_*.py (small, in CI) and benchmarks/chaos.py (large). The parent
process never imports Django: the database is read through `manage.py chaos report` in a
subprocess, so it may live on a cluster the parent is not connected to.

Counted per run: events lost (no succeeded run or no side-effect row), duplicate side effects
(rows beyond one per event), follow-ups sent (events with at least one follow-up message) and
duplicated (messages beyond one per idempotency key: the relay sent an entry twice), and what
ended in the dead-letter queue.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent.parent
CHAOS_APP = "tests.chaos_app"
IDEMPOTENCY_ATTRIBUTE = "s3tasks-idempotency-key"  # s3tasks.followups.outbox.IDEMPOTENCY_ATTRIBUTE
BUCKET = "chaos-events"
PREFIX = "chaos/"


def event_keys(count: int, prefix: str = PREFIX) -> list[str]:
    """The object keys of a run's events, in order (the report recomputes them)."""
    return [f"{prefix}{i:05d}.txt" for i in range(count)]


def s3_body(bucket: str, keys: Sequence[str], first_sequencer: int) -> str:
    """An SQS body with one S3 `ObjectCreated:Put` record per key (keys URL-encoded)."""
    records = [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-01-02T03:04:05.000Z",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                "object": {
                    "key": quote_plus(key, safe="/"),
                    "size": 3,
                    "sequencer": f"{first_sequencer + n:016X}",
                },
            },
        }
        for n, key in enumerate(keys)
    ]
    return json.dumps({"Records": records})


# --- queues ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosQueues:
    url: str
    dlq_url: str
    followup_url: str
    followup_name: str


def make_queues(sqs: Any, name: str, *, max_receive_count: int = 5) -> ChaosQueues:
    """The event queue (with a DLQ after `max_receive_count` receives) and the follow-up queue."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"maxReceiveCount": str(max_receive_count), "deadLetterTargetArn": dlq_arn})
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})["QueueUrl"]
    followup_name = f"{name}-followups"
    followup_url = sqs.create_queue(QueueName=followup_name)["QueueUrl"]
    return ChaosQueues(url, dlq_url, followup_url, followup_name)


def event_bodies(keys: Sequence[str], per_message: int = 1, bucket: str = BUCKET) -> list[str]:
    """SQS bodies holding `keys` as S3 events, `per_message` records each."""
    return [
        s3_body(bucket, keys[i : i + per_message], first_sequencer=i + 1)
        for i in range(0, len(keys), per_message)
    ]


def send_bodies(sqs: Any, url: str, bodies: Sequence[str]) -> None:
    """Send `bodies` to `url`, ten per `SendMessageBatch`."""
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies[start : start + 10])
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


def queue_depth(sqs: Any, url: str) -> int:
    """Visible plus in-flight (hidden) messages; moto's figures are exact."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs[n]) for n in names)


# --- the database, through manage.py ------------------------------------------------------------


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run `manage.py ARGS` with the chaos app loaded; return its stdout (raise on failure)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env={**env, "S3TASKS_EXTRA_APPS": CHAOS_APP},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {result.stderr[-3000:]}")
    return result.stdout


def read_report(
    env: dict[str, str], events: int, *, prefix: str = PREFIX, bucket: str = BUCKET
) -> dict[str, Any]:
    """What the database holds about `event_keys(events, prefix)` (`manage.py chaos report`)."""
    out = manage(
        env, "chaos", "report", "--bucket", bucket, "--events", str(events), "--prefix", prefix
    )
    return json.loads(out)


# --- worker processes ----------------------------------------------------------------------------


class WorkerPool:
    """`count` `sqs_worker` processes; `kill_one()` SIGKILLs the oldest and starts a new one."""

    def __init__(self, env: dict[str, str], args: Sequence[str], log_dir: Path, count: int):
        self.env = {**env, "S3TASKS_EXTRA_APPS": CHAOS_APP}
        self.args = list(args)
        self.log_dir = log_dir
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.kills = 0

    def start(self) -> None:
        for _ in range(self.count):
            self._spawn()

    def _spawn(self) -> None:
        log = self.log_dir / f"worker-{len(self.logs)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "sqs_worker", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        self.logs.append(log)

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def kill_one(self) -> None:
        """kill -9 the longest-running live worker, then start its replacement at once."""
        victim = self.running()[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        self.kills += 1
        self._spawn()

    def stop(self, timeout: float = 30) -> list[int | None]:
        """SIGTERM every live worker, SIGKILL what is left after `timeout`; the exit codes."""
        for process in self.running():
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return [p.returncode for p in self.processes]

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}" for log in self.logs)


# --- follow-ups ----------------------------------------------------------------------------------


class FollowupCollector(threading.Thread):
    """Drains the follow-up queue as it fills (moto slows down as a queue grows), counting each
    message's idempotency key and event key. One consumer: moto never duplicates to it."""

    def __init__(self, sqs: Any, url: str) -> None:
        super().__init__(name="chaos-followups", daemon=True)
        self.sqs = sqs
        self.url = url
        self.by_idempotency_key: Counter[str] = Counter()
        self.keys_by_event: dict[str, set[str]] = {}
        self.sent_at: dict[str, list[int]] = {}  # SQS SentTimestamp (ms) per idempotency key
        self.errors = 0
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.collect_once()
            except Exception:  # moto restarting: try again shortly
                self.errors += 1
                self._stop_event.wait(0.5)

    def collect_once(self) -> int:
        response = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
            AttributeNames=["SentTimestamp"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        with self._lock:
            for message in messages:
                attrs = message.get("MessageAttributes", {})
                idempotency = attrs.get(IDEMPOTENCY_ATTRIBUTE, {}).get("StringValue", "?")
                self.by_idempotency_key[idempotency] += 1
                sent_ms = int(message.get("Attributes", {}).get("SentTimestamp", 0))
                self.sent_at.setdefault(idempotency, []).append(sent_ms)
                key = json.loads(message["Body"]).get("key", "?")
                self.keys_by_event.setdefault(key, set()).add(idempotency)
        entries = [
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)
        ]
        self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
        return len(messages)

    def covered(self) -> int:
        with self._lock:
            return len(self.keys_by_event)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)

    def mark_lags(self, marked_ms: dict[str, int]) -> list[int]:
        """Per entry, ms from SQS accepting it (its first `SentTimestamp`) to the relay marking
        it sent: the part of the duplicate window after AWS has the message."""
        with self._lock:
            return sorted(
                marked_ms[key] - min(times)
                for key, times in self.sent_at.items()
                if key in marked_ms
            )

    def counts(self, keys: Sequence[str]) -> dict[str, Any]:
        with self._lock:
            wanted = set(keys)
            total = sum(self.by_idempotency_key.values())
            return {
                "followup_messages": total,
                "followups_sent": len(wanted & set(self.keys_by_event)),
                "followups_duplicated": total - len(self.by_idempotency_key),
                "events_with_two_followups": sum(
                    1 for k, ids in self.keys_by_event.items() if k in wanted and len(ids) > 1
                ),
                "duplicate_gaps_ms": sorted(
                    max(times) - min(times) for times in self.sent_at.values() if len(times) > 1
                ),
            }
