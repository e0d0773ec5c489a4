"""Dead-letter redrive on moto's HTTP server: which queues a name means, the copy fallback
(moto has no StartMessageMoveTask) with bodies and attributes intact, --max, --dry-run,
refused copies left in the DLQ, send-before-delete under interruption, FIFO queues, and SQS's
move task where it exists (stubbed)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from django.core.management import CommandError, call_command

from s3tasks.aws import client
from s3tasks.exceptions import RedriveError
from s3tasks.ops.redrive import BATCH_BYTES, is_unsupported, redrive
from s3tasks.ops.redrive_queues import QueueInfo, RedrivePlan, resolve_redrive
from tests.conftest import ROOT, subprocess_env
from tests.redrive_support import (
    WrappedSQS,
    arn_of,
    as_sent,
    depth,
    drain,
    fail_into_dlq,
    make_pair,
    originals,
    refusing,
    send_all,
)

pytestmark = [pytest.mark.django_db, pytest.mark.integration]


@pytest.fixture
def failed_25(moto_endpoint) -> tuple[str, str, list]:
    """25 messages (every third with message attributes) failed from `work` into `work-dlq`."""
    source_url, dlq_url = make_pair("work", "work-dlq")
    sent = originals(25)
    send_all(source_url, sent)
    fail_into_dlq(source_url, dlq_url, 25)
    assert depth(source_url) == 0
    return source_url, dlq_url, sent


def test_25_dead_letters_go_back_to_their_source_with_bodies_and_attributes_unchanged(failed_25):
    source_url, dlq_url, sent = failed_25
    plan = resolve_redrive("work-dlq")
    assert (plan.dead_letter_queue.name, [s.name for s in plan.sources]) == ("work-dlq", ["work"])
    progress: list[tuple[int, int | None]] = []

    report = redrive(plan, progress=lambda done, total: progress.append((done, total)))

    assert report.method == "copy"  # moto answers StartMessageMoveTask with a 500
    assert (report.moved, report.failed, report.left, report.ok) == (25, 0, 0, True)
    assert progress[-1] == (25, 25) and [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert depth(dlq_url) == 0
    assert as_sent(drain(source_url)) == sorted(sent, key=lambda p: p[0])


def test_naming_the_source_queue_means_its_dead_letter_queue_redriven_into_it(failed_25):
    source_url, _, _ = failed_25
    plan = resolve_redrive("work")
    assert plan.dead_letter_queue.name == "work-dlq" and plan.destination.name == "work"
    assert redrive(plan).moved == 25 and depth(source_url) == 25


def test_a_dead_letter_queue_is_found_by_url_and_without_queue_rows(moto_endpoint):
    _, dlq_url = make_pair("bare", "bare-dlq", rows=False)  # only the RedrivePolicy in SQS
    plan = resolve_redrive(dlq_url)
    assert [s.name for s in plan.sources] == ["bare"] and plan.destination is None


def test_a_queue_row_names_the_source_when_sqs_has_no_redrive_policy_yet(moto_endpoint):
    from s3tasks.models import Queue

    sqs = client("sqs")
    sqs.create_queue(QueueName="unsynced-dlq")
    sqs.create_queue(QueueName="unsynced")  # no RedrivePolicy: sync has not run
    Queue.objects.create(
        name="unsynced", dead_letter_queue=Queue.objects.create(name="unsynced-dlq")
    )
    assert [s.name for s in resolve_redrive("unsynced-dlq").sources] == ["unsynced"]
    assert resolve_redrive("unsynced").dead_letter_queue.name == "unsynced-dlq"


def test_max_stops_after_n_messages(failed_25):
    source_url, dlq_url, _ = failed_25
    report = redrive(resolve_redrive("work-dlq"), max_messages=7)
    assert (report.moved, report.failed, report.left) == (7, 0, 18)
    assert depth(source_url) == 7 and depth(dlq_url) == 18


def test_dry_run_counts_and_samples_and_moves_nothing(failed_25):
    source_url, dlq_url, _ = failed_25
    report = redrive(resolve_redrive("work-dlq"), dry_run=True)
    assert (report.method, report.depth, report.moved) == ("dry_run", 25, 0)
    assert 1 <= len(report.sample) <= 10
    first = report.sample[0]
    assert first.destination == "work" and '"Records"' in first.body_excerpt
    assert {m.attribute_names for m in report.sample} <= {(), ("attempt", "blob", "origin")}
    assert depth(source_url) == 0 and depth(dlq_url) == 25
    assert redrive(resolve_redrive("work-dlq")).moved == 25  # the sample is visible at once


def test_copies_sqs_refuses_stay_in_the_dead_letter_queue_and_are_never_deleted(failed_25):
    source_url, dlq_url, sent = failed_25
    endings = ('"n": 3}', '"n": 14}')
    refused_bodies = {body for body, _ in sent if body.endswith(endings)}
    sqs = WrappedSQS(client("sqs"), send_message_batch=refusing(endings))

    report = redrive(resolve_redrive("work-dlq"), sqs=sqs)

    assert (report.moved, report.failed, report.left, report.ok) == (23, 2, 2, False)
    assert report.failure_reasons == {"work refused the copy: InternalError try later": 2}
    deleted = {
        e["ReceiptHandle"] for call in sqs.called("delete_message_batch") for e in call["Entries"]
    }
    refused_handles = {
        e["ReceiptHandle"]
        for call in sqs.called("change_message_visibility_batch")
        for e in call["Entries"]
    }
    assert refused_handles and not deleted & refused_handles
    left = drain(dlq_url)  # released at once: visible without waiting for the timeout
    assert {m["Body"] for m in left} == refused_bodies
    assert len(drain(source_url)) == 23


def test_an_interruption_between_send_and_delete_duplicates_and_loses_nothing(failed_25):
    source_url, dlq_url, sent = failed_25

    def killed(real, **kwargs):
        raise KeyboardInterrupt  # the operator's Ctrl-C, after the first batch was sent

    sqs = WrappedSQS(client("sqs"), delete_message_batch=killed)
    with pytest.raises(KeyboardInterrupt):
        redrive(resolve_redrive("work-dlq"), sqs=sqs)

    assert depth(source_url) == 10 and depth(dlq_url) == 25  # sent, nothing deleted
    again = redrive(resolve_redrive("work-dlq"))  # released: the next run takes them all
    assert (again.moved, again.left) == (25, 0)
    bodies = [m["Body"] for m in drain(source_url)]
    assert len(bodies) == 35 and set(bodies) == {body for body, _ in sent}  # 10 twice, none lost


def test_sqs_refusing_a_whole_send_stops_the_run_and_deletes_nothing(failed_25):
    source_url, dlq_url, _ = failed_25

    def denied(real, **kwargs):
        error = {"Error": {"Code": "AccessDenied", "Message": "not allowed"}}
        raise ClientError(error, "SendMessageBatch")

    sqs = WrappedSQS(client("sqs"), send_message_batch=denied)
    report = redrive(resolve_redrive("work-dlq"), sqs=sqs)

    assert (report.moved, report.failed, report.left, report.ok) == (0, 10, 25, False)
    assert len(sqs.called("send_message_batch")) == 1  # stopped after the first refusal
    assert sqs.called("delete_message_batch") == []
    assert "AccessDenied" in report.errors[0]
    assert depth(source_url) == 0 and len(drain(dlq_url)) == 25


def test_batches_stay_under_the_send_message_batch_size_limit(moto_endpoint):
    source_url, dlq_url = make_pair("big", "big-dlq")
    send_all(dlq_url, [("x" * 100_000 + str(i), {}) for i in range(5)])
    sqs = WrappedSQS(client("sqs"))
    assert redrive(resolve_redrive("big-dlq"), sqs=sqs).moved == 5
    sizes = [
        sum(len(e["MessageBody"]) for e in call["Entries"])
        for call in sqs.called("send_message_batch")
    ]
    assert len(sizes) == 3 and max(sizes) <= BATCH_BYTES


def deduplication_window():
    """A `send_message_batch` that drops what SQS drops and moto does not: a FIFO message
    whose deduplication id was sent within the last 5 minutes is reported sent, not queued."""
    seen: set[str] = set()

    def send(real, QueueUrl, Entries):
        fresh = [e for e in Entries if e["MessageDeduplicationId"] not in seen]
        seen.update(e["MessageDeduplicationId"] for e in Entries)
        response = real.send_message_batch(QueueUrl=QueueUrl, Entries=fresh) if fresh else {}
        dropped = [{"Id": e["Id"], "MessageId": "dropped"} for e in Entries if e not in fresh]
        return {"Successful": response.get("Successful", []) + dropped, "Failed": []}

    return send


def test_fifo_messages_keep_their_group_and_are_not_dropped_as_duplicates(moto_endpoint):
    source_url, dlq_url = make_pair("orders.fifo", "orders-dlq.fifo")
    sqs = WrappedSQS(client("sqs"), send_message_batch=deduplication_window())
    send_all(source_url, originals(4), sqs=sqs, MessageGroupId="customer-7")
    fail_into_dlq(source_url, dlq_url, 4)

    report = redrive(resolve_redrive("orders-dlq.fifo"), sqs=sqs)

    # Copies with the original deduplication ids would be dropped as duplicates (same
    # 5-minute window) while their originals are deleted from the DLQ: lost.
    back = drain(source_url)
    assert (report.moved, len(back)) == (4, 4)
    assert {m["Attributes"]["MessageGroupId"] for m in back} == {"customer-7"}
    assert as_sent(back) == sorted(originals(4), key=lambda p: p[0])


def test_a_shared_dead_letter_queue_needs_a_destination_unless_sqs_names_the_source(
    moto_endpoint,
):
    a_url, dlq_url = make_pair("team-a", "shared-dlq")
    policy = {"deadLetterTargetArn": arn_of(dlq_url), "maxReceiveCount": 1}
    b_url = client("sqs").create_queue(
        QueueName="team-b", Attributes={"RedrivePolicy": json.dumps(policy)}
    )["QueueUrl"]
    send_all(dlq_url, originals(3))

    with pytest.raises(RedriveError, match="also serves team-b"):
        resolve_redrive("team-a")
    plan = resolve_redrive("shared-dlq")
    assert [s.name for s in plan.sources] == ["team-a", "team-b"]
    unknown = redrive(plan)  # moto does not record DeadLetterQueueSourceArn
    assert (unknown.moved, unknown.failed, unknown.left) == (0, 3, 3)
    assert "choose the destination (--to)" in next(iter(unknown.failure_reasons))

    def with_source(real, **kwargs):  # as AWS does: the source queue on each message
        response = real.receive_message(**kwargs)
        for i, message in enumerate(response.get("Messages", [])):
            source = arn_of(a_url if i % 2 else b_url)
            message["Attributes"]["DeadLetterQueueSourceArn"] = source
        return response

    sourced = redrive(plan, sqs=WrappedSQS(client("sqs"), receive_message=with_source))
    assert (sourced.moved, sourced.failed) == (3, 0)
    assert (depth(a_url), depth(b_url)) == (1, 2)


def test_an_explicit_destination_takes_every_message(moto_endpoint):
    make_pair("first", "first-dlq")
    elsewhere = client("sqs").create_queue(QueueName="elsewhere")["QueueUrl"]
    send_all(client("sqs").get_queue_url(QueueName="first-dlq")["QueueUrl"], originals(3))
    assert redrive(resolve_redrive("first-dlq", "elsewhere")).moved == 3
    assert depth(elsewhere) == 3


def test_unknown_queues_and_queues_without_dead_letters_are_clear_errors(moto_endpoint):
    client("sqs").create_queue(QueueName="lonely")
    with pytest.raises(RedriveError, match="SQS queue 'nope' does not exist"):
        resolve_redrive("nope")
    with pytest.raises(RedriveError, match="does not exist"):
        resolve_redrive("lonely", "nope-either")
    with pytest.raises(RedriveError, match="no queue's dead-letter queue"):
        resolve_redrive("lonely")


# --- SQS's message move task (AWS): stubbed, moto has none ---------------------------------

DLQ = QueueInfo(
    "jobs-dlq", "https://sqs.us-east-1.amazonaws.com/1/jobs-dlq", "arn:aws:sqs:us-east-1:1:jobs-dlq"
)
JOBS = QueueInfo(
    "jobs", "https://sqs.us-east-1.amazonaws.com/1/jobs", "arn:aws:sqs:us-east-1:1:jobs"
)
DEPTH_NAMES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]


def stubbed_sqs():
    sqs = boto3.client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    return sqs, Stubber(sqs)


def expect_depth(stubber: Stubber, visible: int) -> None:
    stubber.add_response(
        "get_queue_attributes",
        {"Attributes": {DEPTH_NAMES[0]: str(visible), DEPTH_NAMES[1]: "0"}},
        {"QueueUrl": DLQ.url, "AttributeNames": DEPTH_NAMES},
    )


def expect_task(stubber: Stubber, status: str, moved: int, **extra) -> None:
    entry = {"TaskHandle": "task-1", "Status": status, "SourceArn": DLQ.arn}
    entry.update(ApproximateNumberOfMessagesMoved=moved, ApproximateNumberOfMessagesToMove=40)
    stubber.add_response(
        "list_message_move_tasks",
        {"Results": [{**entry, **extra}]},
        {"SourceArn": DLQ.arn, "MaxResults": 10},
    )


def test_where_sqs_has_move_tasks_one_moves_everything_and_is_followed_to_the_end():
    sqs, stubber = stubbed_sqs()
    expect_depth(stubber, 40)
    stubber.add_response(
        "start_message_move_task", {"TaskHandle": "task-1"}, {"SourceArn": DLQ.arn}
    )
    expect_task(stubber, "RUNNING", 15)
    expect_task(stubber, "COMPLETED", 40)
    expect_depth(stubber, 0)
    progress = []
    with stubber:
        report = redrive(
            RedrivePlan(DLQ, (JOBS,)),
            sqs=sqs,
            poll_interval=0,
            progress=lambda *p: progress.append(p),
        )
    stubber.assert_no_pending_responses()
    assert (report.method, report.task_handle, report.moved, report.left, report.ok) == (
        "move_task",
        "task-1",
        40,
        0,
        True,
    )
    assert progress == [(15, 40), (40, 40)]


def test_a_move_task_to_a_chosen_queue_names_it_and_a_failed_task_is_reported():
    sqs, stubber = stubbed_sqs()
    expect_depth(stubber, 40)
    stubber.add_response(
        "start_message_move_task",
        {"TaskHandle": "task-1"},
        {"SourceArn": DLQ.arn, "DestinationArn": JOBS.arn},
    )
    expect_task(stubber, "FAILED", 3, FailureReason="AccessDenied on jobs")
    expect_depth(stubber, 37)
    with stubber:
        report = redrive(RedrivePlan(DLQ, (JOBS,), JOBS), sqs=sqs, poll_interval=0)
    assert (report.moved, report.left, report.ok) == (3, 37, False)
    assert report.errors == ["move task task-1 failed: AccessDenied on jobs"]


def test_sqs_refusing_a_move_task_is_an_error_not_a_silent_fallback():
    sqs, stubber = stubbed_sqs()
    expect_depth(stubber, 40)
    stubber.add_client_error(
        "start_message_move_task", service_error_code="AccessDenied", http_status_code=403
    )
    with stubber, pytest.raises(RedriveError, match="refused to start a message move task"):
        redrive(RedrivePlan(DLQ, (JOBS,)), sqs=sqs)


@pytest.mark.parametrize(
    ("code", "status", "unsupported"),
    [
        ("500", 500, True),  # moto 5.2: an HTML 500 page
        ("NotImplemented", 501, True),
        ("InvalidAction", 400, True),
        ("AccessDenied", 403, False),
        ("ResourceNotFoundException", 400, False),
    ],
)
def test_endpoints_without_move_tasks_are_told_apart_from_refusals(code, status, unsupported):
    error = ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "StartMessageMoveTask",
    )
    assert is_unsupported(error) is unsupported


# --- manage.py s3tasks_redrive --------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_command_moves_everything_and_ends_with_a_summary_line(failed_25):
    out = io.StringIO()
    call_command("s3tasks_redrive", "work-dlq", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Dead-letter queue work-dlq → work"
    assert lines[-1] == (
        "Moved 25 message(s) from work-dlq (receive, send, then delete); 0 failed; about 0 "
        "left in the dead-letter queue."
    )


def test_the_command_shows_a_progress_bar_on_a_terminal(failed_25):
    out = Terminal()
    call_command("s3tasks_redrive", "work", "--max", "20", stdout=out)
    assert "20/20" in out.getvalue() and "Moved 20 message(s)" in out.getvalue()


def test_the_command_dry_run_shows_a_sample_and_moves_nothing(failed_25):
    source_url, _, _ = failed_25
    out = io.StringIO()
    call_command("s3tasks_redrive", "work-dlq", "--dry-run", stdout=out)
    text = out.getvalue()
    assert "→ work  attributes:" in text and '{"Records": [], "n":' in text
    assert text.rstrip().endswith("About 25 message(s) in work-dlq; nothing moved (--dry-run).")
    assert depth(source_url) == 0


def test_the_command_fails_when_a_message_could_not_be_moved(failed_25, monkeypatch):
    sqs = WrappedSQS(client("sqs"), send_message_batch=refusing(('"n": 3}',)))
    monkeypatch.setattr("s3tasks.aws.client", lambda service, **kw: sqs)
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"1 × work refused the copy: InternalError"):
        call_command("s3tasks_redrive", "work-dlq", "--to", "work", stdout=out)
    assert "Moved 24 message(s)" in out.getvalue() and "1 failed" in out.getvalue()


def test_the_command_refuses_a_max_below_one_and_unknown_queues(moto_endpoint):
    with pytest.raises(CommandError, match="--max must be at least 1"):
        call_command("s3tasks_redrive", "work-dlq", "--max", "0")
    with pytest.raises(CommandError, match="SQS queue 'missing-dlq' does not exist"):
        call_command("s3tasks_redrive", "missing-dlq")


@pytest.mark.django_db(transaction=True)
def test_manage_py_exit_codes_say_whether_everything_moved(moto_endpoint):
    _, dlq_url = make_pair("proc", "proc-dlq", rows=False)
    send_all(dlq_url, originals(3))
    command = [sys.executable, "manage.py", "s3tasks_redrive"]
    env = subprocess_env(S3TASKS_ENDPOINT_URL=moto_endpoint)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command + list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    moved = run("proc-dlq")
    assert moved.returncode == 0, moved.stderr
    assert "Moved 3 message(s) from proc-dlq" in moved.stdout
    unknown = run("nope-dlq")
    assert unknown.returncode == 1
    assert "CommandError: SQS queue 'nope-dlq' does not exist" in unknown.stderr


def test_the_command_interrupted_says_what_state_the_queues_are_in(failed_25, monkeypatch):
    source_url, dlq_url, _ = failed_25

    def killed(real, **kwargs):
        raise KeyboardInterrupt

    sqs = WrappedSQS(client("sqs"), delete_message_batch=killed)
    monkeypatch.setattr("s3tasks.aws.client", lambda service, **kw: sqs)
    with pytest.raises(CommandError, match="may now be in both queues"):
        call_command("s3tasks_redrive", "work-dlq", stdout=io.StringIO())
    assert depth(source_url) == 10 and depth(dlq_url) == 25


def test_a_move_task_sqs_no_longer_lists_ends_the_wait_with_an_error():
    sqs, stubber = stubbed_sqs()
    expect_depth(stubber, 40)
    stubber.add_response(
        "start_message_move_task", {"TaskHandle": "task-1"}, {"SourceArn": DLQ.arn}
    )
    stubber.add_response(
        "list_message_move_tasks", {"Results": []}, {"SourceArn": DLQ.arn, "MaxResults": 10}
    )
    expect_depth(stubber, 40)
    with stubber:
        report = redrive(RedrivePlan(DLQ, (JOBS,)), sqs=sqs, poll_interval=0)
    assert report.errors == [f"move task task-1 is not among {DLQ.arn}'s tasks"]
