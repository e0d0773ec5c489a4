"""`MemorySQS`: an in-memory stand-in for a boto3 SQS client (the methods the worker uses).

It answers instantly, so a benchmark measures the worker pipeline rather than an emulator,
and it can inject failures (`fail_next`) that moto cannot produce. Semantics follow SQS where
the worker depends on them: visibility timeouts, receive counts, receipt handles that change
on every receive, redrive to a dead-letter queue after `maxReceiveCount`, long polling.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

BASE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/"


class MemorySQSError(Exception):
    """What an injected failure raises (shaped like botocore's `ClientError` message)."""


@dataclass
class _Message:
    message_id: str
    body: str
    receive_count: int = 0
    visible_at: float = 0.0
    receipt: str = ""


class _Queue:
    def __init__(self, name: str, attributes: dict[str, str]) -> None:
        self.name = name
        self.attributes = {"VisibilityTimeout": "30", **attributes}
        self.ready: deque[_Message] = deque()
        self.hidden: dict[str, _Message] = {}  # receipt handle -> message

    def requeue_expired(self, now: float) -> None:
        expired = [r for r, m in self.hidden.items() if m.visible_at <= now]
        for receipt in expired:
            self.ready.append(self.hidden.pop(receipt))


class MemorySQS:
    """Thread-safe, instant SQS: `create_queue`, `send_message(_batch)`, `receive_message`,
    `delete_message_batch`, `change_message_visibility_batch`, `get_queue_url`,
    `get_queue_attributes`."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queues: dict[str, _Queue] = {}
        self._receipts = itertools.count()
        self._faults: dict[str, deque[Any]] = {}
        self.calls: dict[str, int] = {}

    # --- test helpers ------------------------------------------------------------------------

    def fail_next(self, method: str, fault: Any) -> None:
        """Make the next call of `method` raise `fault` (an exception) or return it (a dict)."""
        with self._lock:
            self._faults.setdefault(method, deque()).append(fault)

    def counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight) messages of a queue."""
        with self._lock:
            q = self._queue(url)
            q.requeue_expired(time.monotonic())
            return len(q.ready), len(q.hidden)

    # --- boto3 methods -----------------------------------------------------------------------

    def create_queue(self, QueueName: str, Attributes: dict[str, str] | None = None) -> dict:
        with self._lock:
            self._queues.setdefault(QueueName, _Queue(QueueName, dict(Attributes or {})))
            return {"QueueUrl": BASE_URL + QueueName}

    def get_queue_url(self, QueueName: str) -> dict:
        with self._lock:
            self._call("get_queue_url")
            if QueueName not in self._queues:
                raise MemorySQSError(f"QueueDoesNotExist: no queue named {QueueName}")
            return {"QueueUrl": BASE_URL + QueueName}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict:
        with self._lock:
            q = self._queue(QueueUrl)
            wanted = q.attributes if "All" in AttributeNames else AttributeNames
            return {"Attributes": {k: q.attributes[k] for k in wanted if k in q.attributes}}

    def send_message(self, QueueUrl: str, MessageBody: str, **_: Any) -> dict:
        message_id = str(uuid.uuid4())
        with self._lock:
            self._queue(QueueUrl).ready.append(_Message(message_id, MessageBody))
            self._lock.notify_all()
        return {"MessageId": message_id}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        for entry in Entries:
            self.send_message(QueueUrl, entry["MessageBody"])
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def receive_message(
        self,
        QueueUrl: str,
        MaxNumberOfMessages: int = 1,
        WaitTimeSeconds: int = 0,
        VisibilityTimeout: int | None = None,
        **_: Any,
    ) -> dict:
        deadline = time.monotonic() + WaitTimeSeconds
        with self._lock:
            self._call("receive_message")
            q = self._queue(QueueUrl)
            timeout = float(VisibilityTimeout or q.attributes["VisibilityTimeout"])
            while True:
                now = time.monotonic()
                q.requeue_expired(now)
                taken = self._take(q, MaxNumberOfMessages, now, timeout)
                if taken or now >= deadline:
                    return {"Messages": taken} if taken else {}
                self._lock.wait(min(0.05, deadline - now))

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        def apply(q: _Queue, entry: dict) -> bool:
            q.hidden.pop(entry["ReceiptHandle"], None)  # SQS: a stale handle is no error
            return True

        return self._batch("delete_message_batch", QueueUrl, Entries, apply)

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        def apply(q: _Queue, entry: dict) -> bool:
            message = q.hidden.get(entry["ReceiptHandle"])
            if message is None:
                return False
            message.visible_at = time.monotonic() + int(entry["VisibilityTimeout"])
            self._lock.notify_all()
            return True

        return self._batch("change_message_visibility_batch", QueueUrl, Entries, apply)

    # --- internals ---------------------------------------------------------------------------

    def _call(self, method: str) -> dict | None:
        self.calls[method] = self.calls.get(method, 0) + 1
        faults = self._faults.get(method)
        if not faults:
            return None
        fault = faults.popleft()
        if isinstance(fault, BaseException):
            raise fault
        return fault

    def _queue(self, url: str) -> _Queue:
        name = url.rsplit("/", 1)[-1]
        try:
            return self._queues[name]
        except KeyError:
            raise MemorySQSError(f"QueueDoesNotExist: {url}") from None

    def _take(self, q: _Queue, limit: int, now: float, timeout: float) -> list[dict]:
        taken: list[dict] = []
        max_receive, dlq = self._redrive(q)
        while q.ready and len(taken) < limit:
            message = q.ready.popleft()
            if max_receive is not None and message.receive_count >= max_receive and dlq:
                message.receive_count = 0
                dlq.ready.append(message)
                continue
            message.receive_count += 1
            message.receipt = f"{message.message_id}#{next(self._receipts)}"
            message.visible_at = now + timeout
            q.hidden[message.receipt] = message
            taken.append(
                {
                    "MessageId": message.message_id,
                    "ReceiptHandle": message.receipt,
                    "Body": message.body,
                    "Attributes": {"ApproximateReceiveCount": str(message.receive_count)},
                }
            )
        return taken

    def _redrive(self, q: _Queue) -> tuple[int | None, _Queue | None]:
        policy = q.attributes.get("RedrivePolicy")
        if not policy:
            return None, None
        data = json.loads(policy)
        target = self._queues.get(str(data["deadLetterTargetArn"]).rsplit(":", 1)[-1])
        return int(data["maxReceiveCount"]), target

    def _batch(self, method: str, url: str, entries: list[dict], apply: Any) -> dict:
        with self._lock:
            injected = self._call(method)
            if injected is not None:
                return injected
            q = self._queue(url)
            ok, failed = [], []
            for entry in entries:
                if apply(q, entry):
                    ok.append({"Id": entry["Id"]})
                else:
                    failed.append(
                        {"Id": entry["Id"], "Code": "ReceiptHandleIsInvalid", "SenderFault": True}
                    )
            return {"Successful": ok, "Failed": failed}
