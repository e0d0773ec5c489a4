"""Dead-letter queue redrive: move messages from a DLQ back to the queue(s) they came from.

Two ways, one report:

- SQS's own `StartMessageMoveTask`, an asynchronous task inside SQS that returns each message
  to the queue it came from. Used when no limit is asked for, the DLQ has source queues, and
  the endpoint supports it.
- Copying: receive from the DLQ, `SendMessageBatch` to the source (same body and message
  attributes), and only then `DeleteMessageBatch` the originals whose copy SQS accepted. Used
  with a limit, and when the endpoint has no move tasks (moto answers HTTP 500). An
  interruption between send and delete leaves a message in both queues — a duplicate that
  s3tasks' exactly-once run records absorb — and never loses one.

Which queues a name means is `s3tasks.ops.redrive_queues`. Called by `manage.py
s3tasks_redrive` and the `Queue` admin action; docs/operations.md, "Draining a dead-letter
queue".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from s3tasks import aws
from s3tasks.exceptions import RedriveError
from s3tasks.ops.redrive_queues import QueueInfo, RedrivePlan, queue_depth

logger = logging.getLogger(__name__)

Method = Literal["move_task", "copy", "dry_run"]
Progress = Callable[[int, int | None], None]  # (messages done, messages expected)
Message = dict[str, Any]  # one message as `ReceiveMessage` returns it

BATCH_LIMIT = 10  # SQS's batch size
BATCH_BYTES = 262_144  # SendMessageBatch's payload limit (256 KiB)
VISIBILITY_TIMEOUT = 300  # how long a received DLQ message stays hidden while it is moved
WAIT_TIME = 1  # long poll: an empty answer means the DLQ is empty, not just a sampled miss
SAMPLE_SIZE = 10
EXCERPT_LENGTH = 200
# How endpoints without message move tasks answer StartMessageMoveTask.
UNSUPPORTED_CODES = frozenset(
    {
        "NotImplemented",
        "NotImplementedException",
        "InvalidAction",
        "UnknownOperationException",
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
    }
)
UNSUPPORTED_STATUSES = frozenset({500, 501})
MOVE_TASK_DONE = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
ATTRIBUTE_KEYS = ("DataType", "StringValue", "BinaryValue", "StringListValues", "BinaryListValues")


@dataclass(frozen=True)
class SampleMessage:
    """A message shown by a dry run (it stays in the DLQ)."""

    message_id: str
    receive_count: int
    body_excerpt: str
    attribute_names: tuple[str, ...]
    destination: str  # a queue name, or why the message could not be moved


@dataclass
class RedriveReport:
    """What one redrive found and did."""

    plan: RedrivePlan
    method: Method
    depth: int = 0  # messages visible in the DLQ before (approximate)
    moved: int = 0  # copied to their destination (or moved by the move task)
    failed: int = 0  # left in the DLQ: SQS refused their copy, or nowhere to send them
    not_deleted: int = 0  # moved, but the DLQ still holds them: a later redrive duplicates
    left: int | None = None  # messages in the DLQ afterwards, visible + in flight (approx.)
    task_handle: str = ""
    sample: list[SampleMessage] = field(default_factory=list)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.not_deleted or self.errors)

    @property
    def done(self) -> int:
        return self.moved + self.failed

    def fail(self, message: Message, reason: str) -> None:
        self.failed += 1
        self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + 1
        logger.warning(
            "s3tasks redrive: message %s stays in %s: %s",
            message.get("MessageId"),
            self.plan.dead_letter_queue.name,
            reason,
        )

    def error(self, text: str) -> None:
        if text not in self.errors:
            self.errors.append(text)
            logger.error("s3tasks redrive: %s", text)


def redrive(
    plan: RedrivePlan,
    *,
    max_messages: int | None = None,
    dry_run: bool = False,
    sqs: Any = None,
    progress: Progress | None = None,
    use_move_task: bool = True,
    visibility_timeout: int = VISIBILITY_TIMEOUT,
    wait_time: int = WAIT_TIME,
    poll_interval: float = 2.0,
) -> RedriveReport:
    """Move up to `max_messages` (all when None) from the plan's DLQ; `dry_run` only counts
    and samples. `RedriveError` when it cannot start; after that, what SQS refuses is in the
    report, never raised: a message that cannot be moved stays in the DLQ."""
    sqs = sqs or aws.client("sqs")
    dead_letter_queue = plan.dead_letter_queue
    try:
        depth, _ = queue_depth(sqs, dead_letter_queue)
    except _aws_errors() as exc:
        raise RedriveError(f"cannot read {dead_letter_queue.name}'s depth: {exc}") from exc
    if dry_run:
        report = RedriveReport(plan, "dry_run", depth=depth, left=depth)
        try:
            report.sample = peek(sqs, plan)
        except _aws_errors() as exc:
            raise RedriveError(f"cannot sample {dead_letter_queue.name}: {exc}") from exc
        return report
    report = RedriveReport(plan, "move_task", depth=depth)
    expected = depth if max_messages is None else min(depth, max_messages)
    if use_move_task and max_messages is None and plan.sources and _start_move_task(sqs, report):
        _follow_move_task(sqs, report, expected, progress, poll_interval)
    else:
        report.method = "copy"

        def tick() -> None:
            if progress:
                progress(report.done, expected)

        _Copier(sqs, report, visibility_timeout, wait_time).run(max_messages, tick)
    try:
        report.left = sum(queue_depth(sqs, dead_letter_queue))
    except _aws_errors() as exc:
        report.error(f"cannot read {dead_letter_queue.name}'s depth afterwards: {exc}")
    return report


def peek(sqs: Any, plan: RedrivePlan, count: int = SAMPLE_SIZE) -> list[SampleMessage]:
    """Up to `count` messages of the DLQ, received with visibility 0 so they stay available."""
    response = sqs.receive_message(
        QueueUrl=plan.dead_letter_queue.url,
        MaxNumberOfMessages=max(1, min(BATCH_LIMIT, count)),
        WaitTimeSeconds=WAIT_TIME,
        VisibilityTimeout=0,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    sample = []
    for message in response.get("Messages", []):
        system = message.get("Attributes") or {}
        where = plan.destination_for(system.get("DeadLetterQueueSourceArn", ""))
        sample.append(
            SampleMessage(
                message_id=message["MessageId"],
                receive_count=int(system.get("ApproximateReceiveCount", 0)),
                body_excerpt=" ".join(message.get("Body", "").split())[:EXCERPT_LENGTH],
                attribute_names=tuple(sorted(message.get("MessageAttributes") or {})),
                destination=where if isinstance(where, str) else where.name,
            )
        )
    return sample


def _aws_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError  # botocore only when moving

    return (BotoCoreError, ClientError)


def is_unsupported(exc: Exception) -> bool:
    """True when the endpoint has no such operation (an emulator), as opposed to refusing it."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in UNSUPPORTED_CODES or status in UNSUPPORTED_STATUSES


def _start_move_task(sqs: Any, report: RedriveReport) -> bool:
    """Start SQS's move task; False when the endpoint has none (then copy instead)."""
    plan = report.plan
    params = {"SourceArn": plan.dead_letter_queue.arn}
    if plan.destination is not None:
        params["DestinationArn"] = plan.destination.arn
    try:
        report.task_handle = sqs.start_message_move_task(**params)["TaskHandle"]
    except sqs.exceptions.ClientError as exc:
        if not is_unsupported(exc):
            raise RedriveError(f"SQS refused to start a message move task: {exc}") from exc
        logger.info(
            "s3tasks redrive: %s has no StartMessageMoveTask (%s); copying instead",
            sqs.meta.endpoint_url,
            exc,
        )
        return False
    logger.info("s3tasks redrive: started message move task %s", report.task_handle)
    return True


def _follow_move_task(
    sqs: Any, report: RedriveReport, expected: int, progress: Progress | None, interval: float
) -> None:
    source_arn = report.plan.dead_letter_queue.arn
    while True:
        try:
            tasks = sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=10)["Results"]
        except _aws_errors() as exc:
            report.error(
                f"cannot follow move task {report.task_handle} ({exc}); it goes on in SQS: "
                f"aws sqs list-message-move-tasks --source-arn {source_arn}"
            )
            return
        task = next((t for t in tasks if t.get("TaskHandle") == report.task_handle), None)
        if task is None:
            report.error(f"move task {report.task_handle} is not among {source_arn}'s tasks")
            return
        report.moved = int(task.get("ApproximateNumberOfMessagesMoved", report.moved))
        to_move = task.get("ApproximateNumberOfMessagesToMove")
        if progress:
            progress(report.moved, int(to_move) if to_move is not None else expected)
        status = task.get("Status", "")
        if status in MOVE_TASK_DONE:
            break
        time.sleep(interval)
    if status != "COMPLETED":
        reason = task.get("FailureReason") or "no reason given"
        report.error(f"move task {report.task_handle} {status.lower()}: {reason}")


class _Copier:
    """Receive → send copies → delete the originals SQS accepted a copy of.

    Every message received and not deleted is made visible again when the run ends (also on
    an exception), so a failed or interrupted message is at once available to the next
    redrive. A message that failed is not tried again in the same run.
    """

    def __init__(self, sqs: Any, report: RedriveReport, visibility: int, wait: int) -> None:
        self.sqs, self.report = sqs, report
        self.plan = report.plan
        self.visibility, self.wait = visibility, wait
        self.held: dict[str, Message] = {}  # received, not deleted: released at the end
        self.gave_up: set[str] = set()

    def run(self, limit: int | None, tick: Callable[[], None]) -> None:
        taken = 0
        try:
            while limit is None or taken < limit:
                want = BATCH_LIMIT if limit is None else min(BATCH_LIMIT, limit - taken)
                received = self._receive(want)
                self.held.update((m["MessageId"], m) for m in received)
                fresh = [m for m in received if m["MessageId"] not in self.gave_up]
                if not fresh:
                    break
                taken += len(fresh)
                go_on = self._move(fresh)
                tick()
                if not go_on:
                    break
        finally:
            self._release(list(self.held.values()))

    def _receive(self, want: int) -> list[Message]:
        try:
            response = self.sqs.receive_message(
                QueueUrl=self.plan.dead_letter_queue.url,
                MaxNumberOfMessages=want,
                WaitTimeSeconds=self.wait,
                VisibilityTimeout=self.visibility,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except _aws_errors() as exc:
            self.report.error(f"receiving from {self.plan.dead_letter_queue.name} failed: {exc}")
            return []
        return response.get("Messages", [])

    def _move(self, messages: list[Message]) -> bool:
        """Copy, then delete what was copied. False: stop (SQS refused a whole call)."""
        groups: dict[str, tuple[QueueInfo, list[Message]]] = {}
        for message in messages:
            system = message.get("Attributes") or {}
            where = self.plan.destination_for(system.get("DeadLetterQueueSourceArn", ""))
            if isinstance(where, str):
                self._give_up(message, where)
            elif where.is_fifo and not system.get("MessageGroupId"):
                self._give_up(message, f"no MessageGroupId for FIFO queue {where.name}")
            else:
                groups.setdefault(where.url, (where, []))[1].append(message)
        sent: list[Message] = []
        stopped = ""
        for queue, group in groups.values():
            for chunk in _chunks(group, queue):
                if stopped:
                    for message in chunk:
                        self._give_up(message, stopped)
                    continue
                stopped = self._send(queue, chunk, sent)
        self.report.moved += len(sent)
        deleted = self._delete(sent)
        return not stopped and deleted

    def _send(self, queue: QueueInfo, chunk: list[Message], sent: list[Message]) -> str:
        """Send one batch; the copies SQS accepted go to `sent`. Returns why the run must stop."""
        entries = [{"Id": str(i), **_entry(m, queue)} for i, m in enumerate(chunk)]
        try:
            response = self.sqs.send_message_batch(QueueUrl=queue.url, Entries=entries)
        except _aws_errors() as exc:
            reason = f"sending to {queue.name} failed: {exc}"
            self.report.error(reason)
            for message in chunk:
                self._give_up(message, reason)
            return reason
        refused = {f["Id"]: f for f in response.get("Failed", [])}
        for i, message in enumerate(chunk):
            failure = refused.get(str(i))
            if failure is None:
                sent.append(message)
            else:
                code, text = failure.get("Code", "?"), failure.get("Message", "")
                self._give_up(message, f"{queue.name} refused the copy: {code} {text}".strip())
        return ""

    def _delete(self, sent: list[Message]) -> bool:
        url, ok = self.plan.dead_letter_queue.url, True
        for start in range(0, len(sent), BATCH_LIMIT):
            chunk = sent[start : start + BATCH_LIMIT]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ]
            try:
                response = self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            except _aws_errors() as exc:
                self.report.not_deleted += len(sent) - start
                self.report.error(f"deleting moved messages from the DLQ failed: {exc}")
                return False
            refused = {f["Id"]: f for f in response.get("Failed", [])}
            for i, message in enumerate(chunk):
                if str(i) in refused:
                    self.report.not_deleted += 1
                    self.report.error(
                        f"deleting a moved message from the DLQ failed: {refused[str(i)]}"
                    )
                    ok = False
                else:
                    self.held.pop(message["MessageId"], None)
        return ok

    def _give_up(self, message: Message, reason: str) -> None:
        self.gave_up.add(message["MessageId"])
        self.report.fail(message, reason)

    def _release(self, messages: list[Message]) -> None:
        """Make messages visible again at once; if that fails they return after the timeout."""
        url = self.plan.dead_letter_queue.url
        for start in range(0, len(messages), BATCH_LIMIT):
            chunk = messages[start : start + BATCH_LIMIT]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ]
            try:
                self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)
            except Exception as exc:  # noqa: BLE001 - they come back after the timeout anyway
                logger.warning(
                    "s3tasks redrive: could not release %d message(s): %s", len(chunk), exc
                )


def _entry(message: Message, queue: QueueInfo) -> dict[str, Any]:
    """A SendMessageBatch entry (without its Id) copying `message` to `queue`."""
    entry: dict[str, Any] = {"MessageBody": message.get("Body", "")}
    attributes = message.get("MessageAttributes") or {}
    if attributes:
        entry["MessageAttributes"] = {
            name: {k: v for k, v in value.items() if k in ATTRIBUTE_KEYS and v not in ("", [])}
            for name, value in attributes.items()
        }
    system = message.get("Attributes") or {}
    if system.get("AWSTraceHeader"):
        entry["MessageSystemAttributes"] = {
            "AWSTraceHeader": {"DataType": "String", "StringValue": system["AWSTraceHeader"]}
        }
    if queue.is_fifo:
        entry["MessageGroupId"] = system["MessageGroupId"]
        # Not the original deduplication id: within SQS's 5-minute window that would make
        # SQS accept the copy and drop it, and the original would then be deleted — lost.
        # The DLQ message id is unique per stay in the DLQ, so only a retried send dedupes.
        entry["MessageDeduplicationId"] = f"redrive-{message['MessageId']}"
    return entry


def _entry_size(entry: dict[str, Any]) -> int:
    size = len(entry["MessageBody"].encode())
    for name, value in entry.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(value.get("DataType", "").encode())
        size += len(value.get("StringValue", "").encode()) + len(value.get("BinaryValue", b""))
    return size


def _chunks(messages: Iterable[Message], queue: QueueInfo) -> Iterator[list[Message]]:
    """Batches of at most 10 messages and 256 KiB (a larger message goes alone)."""
    chunk: list[Message] = []
    size = 0
    for message in messages:
        entry_size = _entry_size(_entry(message, queue))
        if chunk and (len(chunk) == BATCH_LIMIT or size + entry_size > BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += entry_size
    if chunk:
        yield chunk
