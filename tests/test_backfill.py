"""`manage.py s3tasks_backfill` on an in-process S3 (moto's `mock_aws`), dispatching inline:
listing and filters, routing (object creations only, or the named handlers), exactly once on
a re-run, dry run, summary and report, resuming, cancelling, and memory that stays flat."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from moto import mock_aws

from s3tasks import aws
from s3tasks.envelopes import parse_events
from s3tasks.events import EventSource, S3Event
from s3tasks.exceptions import BackfillError, MalformedMessage
from s3tasks.models import Backfill, EventRecord, HandlerRun
from s3tasks.ops import backfill as core
from s3tasks.ops.backfill import RateLimiter, resume_backfill, run_backfill, start_backfill
from s3tasks.ops.backfill_enqueue import message_body
from s3tasks.ops.backfill_objects import BackfillRequest, backfill_event, backfill_record
from s3tasks.processing.dispatch import BatchItem
from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of
from tests.worker_app.handlers import ALWAYS_FAIL, COUNT, runs_per_key
from tests.worker_support import bind

pytestmark = pytest.mark.django_db

BUCKET = "backfill-tests"
OTHER = "tests.dispatch.count"  # a second counting handler (runs_of(RUNS_BUCKET, key))
AWKWARD = ["in/with space.csv", "in/plus+sign.csv", "in/ünïcødé ファイル.csv", "in/100%.csv"]


@pytest.fixture
def s3(aws_credentials, settings):
    settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": None, "DISPATCH": "inline"}
    with mock_aws():
        aws.reset_clients()
        client = aws.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    aws.reset_clients()


def put(s3, *keys: str) -> None:
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())


def backfill(*args: str) -> tuple[int, str]:
    """Run the command; (exit status, what it wrote to stdout)."""
    from io import StringIO

    out = StringIO()
    try:
        call_command("s3tasks_backfill", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


# --- what is listed and routed ----------------------------------------------------------------


def test_every_created_object_under_the_prefix_with_the_suffix_runs_once_with_decoded_keys(s3):
    put(s3, *AWKWARD, "in/skip.txt", "out/other.csv")
    bind(COUNT, BUCKET)

    status, output = backfill(BUCKET, "--prefix", "in/", "--suffix", ".csv")

    assert status == 0, output
    assert runs_per_key() == dict.fromkeys(AWKWARD, 1)
    assert set(EventRecord.objects.values_list("source", flat=True)) == {EventSource.BACKFILL}
    row = Backfill.objects.get()
    assert (row.state, row.listed, row.matched, row.dispatched, row.failed) == (
        Backfill.State.COMPLETED,
        5,  # the prefix is the listing's; the suffix filters what it listed
        4,
        4,
        0,
    )


def test_rules_for_any_kind_of_creation_match_and_removal_rules_do_not(s3):
    put(s3, "a.csv")
    bind(COUNT, BUCKET, events=("s3:ObjectCreated:Copy",))
    bind(OTHER, BUCKET, events=("s3:ObjectRemoved:*",))

    status, output = backfill(BUCKET)

    assert status == 0, output
    assert runs_per_key() == {"a.csv": 1}
    assert runs_of(RUNS_BUCKET, "a.csv") == 0
    assert list(HandlerRun.objects.values_list("handler_name", flat=True)) == [COUNT]


def test_named_handlers_run_instead_of_the_rules_even_without_a_rule(s3):
    put(s3, "a.csv", "b.csv")
    bind(COUNT, BUCKET)

    status, output = backfill(BUCKET, "--handler", OTHER)

    assert status == 0, output
    assert runs_per_key() == {}
    assert (runs_of(RUNS_BUCKET, "a.csv"), runs_of(RUNS_BUCKET, "b.csv")) == (1, 1)


def test_an_unknown_handler_or_a_bucket_without_creation_rules_is_refused_before_listing(s3):
    put(s3, "a.csv")
    assert backfill(BUCKET, "--handler", "no.such.handler")[0] == 1
    bind(COUNT, BUCKET, events=("s3:ObjectRemoved:*",))
    status, output = backfill(BUCKET)
    assert status == 1 and "routes object creations" in output
    assert not Backfill.objects.exists() and not EventRecord.objects.exists()


def test_modified_since_and_until_keep_objects_last_modified_in_that_window(s3):
    put(s3, "a.csv")
    bind(COUNT, BUCKET)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert backfill(BUCKET, "--modified-since", tomorrow)[0] == 0
    assert runs_per_key() == {}
    assert backfill(BUCKET, "--modified-until", tomorrow, "--modified-since", "2020-01-01")[0] == 0
    assert runs_per_key() == {"a.csv": 1}


def test_the_window_is_since_inclusive_until_exclusive_in_utc():
    noon = datetime(2024, 5, 1, 12, tzinfo=UTC)
    request = BackfillRequest(BUCKET, modified_since=noon, modified_until=noon + timedelta(hours=1))
    assert request.wants({"Key": "k", "LastModified": noon})
    assert not request.wants({"Key": "k", "LastModified": noon - timedelta(seconds=1)})
    assert not request.wants({"Key": "k", "LastModified": noon + timedelta(hours=1)})
    assert BackfillRequest(BUCKET, suffix=".csv").wants({"Key": "a.csv"})


# --- exactly once -----------------------------------------------------------------------------


def test_running_a_backfill_again_runs_nothing_twice_and_counts_it_as_skipped(s3):
    put(s3, *AWKWARD)
    bind(COUNT, BUCKET)
    assert backfill(BUCKET)[0] == 0

    status, output = backfill(BUCKET)

    assert status == 0, output
    assert runs_per_key() == dict.fromkeys(AWKWARD, 1)
    second = Backfill.objects.order_by("pk").last()
    assert (second.dispatched, second.skipped) == (0, 4)
    assert EventRecord.objects.count() == 4


def test_a_changed_object_is_a_new_version_and_runs_again(s3):
    put(s3, "a.csv")
    bind(COUNT, BUCKET)
    backfill(BUCKET)
    s3.put_object(Bucket=BUCKET, Key="a.csv", Body=b"new content")
    backfill(BUCKET)
    assert runs_per_key() == {"a.csv": 2}


def test_a_backfill_event_s_dedup_key_is_its_object_version_not_when_or_by_whom_it_was_listed():
    obj = {"Key": "a b.csv", "ETag": '"abc"', "Size": 3, "LastModified": datetime.now(UTC)}
    first = backfill_event(BUCKET, obj, region="us-east-1", backfill_id=1)
    later = backfill_event(
        BUCKET,
        {**obj, "LastModified": datetime(2020, 1, 1, tzinfo=UTC)},
        region="eu-west-1",
        backfill_id=2,
        handlers=(COUNT,),
    )
    changed = backfill_event(BUCKET, {**obj, "ETag": '"abd"'}, region="us-east-1", backfill_id=1)
    assert first.dedup_key == later.dedup_key != changed.dedup_key
    notified = S3Event(BUCKET, "a b.csv", "ObjectCreated:Put", etag="abc", sequencer="0A1")
    assert notified.dedup_key != first.dedup_key  # a notification's key is its sequencer's


def test_the_enqueued_body_parses_back_to_the_same_backfill_event():
    obj = {"Key": "ü/a b+c%.csv", "ETag": '"abc"', "Size": 3, "LastModified": datetime.now(UTC)}
    event = backfill_event(BUCKET, obj, region="us-east-1", backfill_id=7, handlers=(COUNT,))

    [parsed] = parse_events(message_body(BatchItem(event)))

    assert parsed == event and parsed.dedup_key == event.dedup_key
    assert parsed.source == EventSource.BACKFILL and parsed.backfill_handlers == (COUNT,)
    assert parsed.raw["s3"]["object"]["key"] == "%C3%BC/a+b%2Bc%25.csv"  # as S3 encodes keys


def test_a_record_whose_backfill_marker_is_not_a_list_of_names_is_malformed():
    record = backfill_record(BUCKET, {"Key": "a", "ETag": "x"}, region="r", backfill_id=1)
    record["s3tasks"]["handlers"] = "tests.worker.count"
    with pytest.raises(MalformedMessage, match=r"Records\[0\]\.s3tasks\.handlers"):
        parse_events({"Records": [record]})
    with pytest.raises(MalformedMessage, match="s3tasks: expected an object"):
        parse_events({"Records": [{**record, "s3tasks": []}]})


# --- dry run, summary, report --------------------------------------------------------------------


def test_a_dry_run_counts_objects_per_handler_and_records_and_runs_nothing(s3, tmp_path):
    put(s3, "a.csv", "b.csv", "c.txt")
    bind(COUNT, BUCKET)
    bind(OTHER, "unrelated-bucket")  # another bucket's rule matches nothing here
    report = tmp_path / "dry.json"

    status, output = backfill(BUCKET, "--dry-run", "--report", str(report))

    assert status == 0, output
    assert "nothing run" in output
    assert [COUNT, "3"] in [line.split() for line in output.splitlines()]
    assert not EventRecord.objects.exists() and not Backfill.objects.exists()
    assert runs_per_key() == {}
    data = json.loads(report.read_text())
    assert data["dry_run"] and data["listed"] == 3 and data["handlers"][COUNT]["matched"] == 3


def test_the_summary_table_and_the_json_report_count_listed_matched_dispatched_skipped_failed(
    s3, tmp_path
):
    put(s3, "a.csv", "b.csv", "c.txt")
    bind(COUNT, BUCKET, events=("s3:ObjectCreated:*",))
    backfill(BUCKET, "--suffix", "b.csv")  # b.csv done before
    bind(ALWAYS_FAIL, BUCKET)
    report = tmp_path / "report.json"

    status, output = backfill(BUCKET, "--suffix", ".csv", "--report", str(report))

    assert status == 1  # a handler failed: the exit status says so
    assert "tests.worker.always_fail" in output and "cannot handle a.csv" in output
    data = json.loads(report.read_text())
    assert {k: data[k] for k in ("listed", "matched", "dispatched", "skipped", "failed")} == {
        "listed": 3,
        "matched": 2,
        "dispatched": 1,  # count on a.csv
        "skipped": 1,  # count on b.csv
        "failed": 2,  # always_fail on both
    }
    assert data["handlers"][COUNT] == {"matched": 2, "dispatched": 1, "skipped": 1, "failed": 0}
    assert data["state"] == "completed" and data["errors"]
    lines = output.splitlines()
    header = next(line for line in lines if "dispatched" in line).split()
    assert header == ["handler", "matched", "dispatched", "skipped", "failed"]
    rows = [line.split() for line in lines]
    assert [COUNT, "2", "1", "1", "0"] in rows and [ALWAYS_FAIL, "2", "0", "0", "2"] in rows
    assert (
        "listed 3 object(s) in 1 page(s); 2 matched a handler; runs: 1 dispatched, 1 skipped "
        "as already done, 2 failed" in output
    )


# --- resuming, cancelling -----------------------------------------------------------------------


class ListingFailsAfter:
    """An S3 client whose ListObjectsV2 fails after `pages` pages (a network outage)."""

    def __init__(self, client, pages: int) -> None:
        self.client, self.pages, self.calls = client, pages, 0

    def list_objects_v2(self, **kwargs):
        self.calls += 1
        if self.calls > self.pages:
            raise ConnectionError("the network went away")
        return self.client.list_objects_v2(**kwargs)


def test_a_backfill_that_failed_mid_listing_resumes_after_its_last_committed_page(s3, monkeypatch):
    keys = [f"k/{n:03d}.csv" for n in range(23)]
    put(s3, *keys)
    bind(COUNT, BUCKET)
    real_client = aws.client
    failing = ListingFailsAfter(s3, pages=2)
    monkeypatch.setattr(aws, "client", lambda s, **kw: failing if s == "s3" else real_client(s))

    status, output = backfill(BUCKET, "--page-size", "5")

    assert status == 1 and "the network went away" in output
    row = Backfill.objects.get()
    assert (row.state, row.listed, row.dispatched, row.resume_after) == ("failed", 10, 10, keys[9])
    monkeypatch.setattr(aws, "client", real_client)

    status, output = backfill("--resume", str(row.pk), "--page-size", "5")

    assert status == 0, output
    row.refresh_from_db()
    assert (row.state, row.listed, row.matched, row.dispatched, row.skipped) == (
        "completed",
        23,
        23,
        23,
        0,
    )
    assert runs_per_key() == dict.fromkeys(keys, 1)


def test_ctrl_c_leaves_the_backfill_interrupted_without_the_chunk_it_was_in(s3, monkeypatch):
    keys = [f"k/{n:02d}.csv" for n in range(9)]
    put(s3, *keys)
    bind(COUNT, BUCKET)
    real_dispatch = core.dispatch_batch
    calls = []

    def interrupted_third(items, mode=None):
        calls.append(len(items))
        if len(calls) == 3:
            real_dispatch(items[:1], mode=mode)  # a handler ran, then Ctrl-C
            raise KeyboardInterrupt
        return real_dispatch(items, mode=mode)

    monkeypatch.setattr(core, "dispatch_batch", interrupted_third)
    monkeypatch.setattr(core, "CHUNK_SIZE", 3)

    status, output = backfill(BUCKET)

    assert status == 130 and "--resume" in output
    row = Backfill.objects.get()
    assert (row.state, row.listed, row.dispatched, row.resume_after) == (
        "interrupted",
        6,
        6,
        keys[5],
    )
    assert runs_per_key() == dict.fromkeys(keys[:6], 1)  # the third chunk's run rolled back
    monkeypatch.setattr(core, "dispatch_batch", real_dispatch)
    assert backfill("--resume", str(row.pk))[0] == 0
    row.refresh_from_db()
    assert (row.state, row.listed, row.dispatched) == ("completed", 9, 9)
    assert runs_per_key() == dict.fromkeys(keys, 1)


def test_a_cancelled_backfill_stops_before_its_next_chunk_and_can_be_resumed(s3, monkeypatch):
    keys = [f"k/{n:02d}.csv" for n in range(6)]
    put(s3, *keys)
    bind(COUNT, BUCKET)
    monkeypatch.setattr(core, "CHUNK_SIZE", 2)
    row = start_backfill(BackfillRequest(BUCKET, mode="inline"))

    def cancel_after_first_chunk(counters):
        Backfill.objects.filter(pk=row.pk).update(state=Backfill.State.CANCELLED)

    result = run_backfill(row, progress=cancel_after_first_chunk)

    row.refresh_from_db()
    assert (result.backfill.state, row.state, row.listed) == ("cancelled", "cancelled", 2)
    assert len(runs_per_key()) == 2
    result = run_backfill(resume_backfill(row.pk))
    assert result.ok and result.counters.listed == 6 and len(runs_per_key()) == 6


def test_a_completed_or_live_backfill_cannot_be_resumed_but_a_silent_one_can(s3):
    bind(COUNT, BUCKET)
    row = start_backfill(BackfillRequest(BUCKET, mode="inline"))
    with pytest.raises(BackfillError, match="is running"):
        resume_backfill(row.pk)
    Backfill.objects.filter(pk=row.pk).update(updated_at=datetime.now(UTC) - timedelta(hours=1))
    assert resume_backfill(row.pk).state == "running"  # its process died without a word
    run_backfill(row)
    with pytest.raises(BackfillError, match="is completed"):
        resume_backfill(row.pk)
    with pytest.raises(BackfillError, match="no backfill 999"):
        resume_backfill(999)


def test_resume_takes_no_new_filters():
    status, output = backfill("--resume", "1", "--prefix", "x/")
    assert status == 1 and "--resume goes on as the backfill was started" in output


# --- memory, pace, progress ----------------------------------------------------------------------


def test_pages_are_listed_one_at_a_time_and_only_a_page_of_events_is_ever_held(s3, monkeypatch):
    keys = [f"k/{n:03d}.csv" for n in range(40)]
    put(s3, *keys)
    bind(COUNT, BUCKET)
    steps: list[str] = []
    held: list[int] = []
    real_list, real_dispatch = s3.list_objects_v2, core.dispatch_batch

    def listing(**kwargs):
        steps.append("list")
        return real_list(**kwargs)

    def dispatching(items, mode=None):
        steps.append("dispatch")
        gc.collect()
        held.append(sum(isinstance(o, S3Event) for o in gc.get_objects()))
        return real_dispatch(items, mode=mode)

    monkeypatch.setattr(s3, "list_objects_v2", listing)
    monkeypatch.setattr(core, "dispatch_batch", dispatching)
    gc.collect()
    before = sum(isinstance(o, S3Event) for o in gc.get_objects())

    result = run_backfill(
        start_backfill(BackfillRequest(BUCKET, mode="inline")), s3=s3, page_size=5
    )

    assert result.ok and result.counters.dispatched == 40
    assert steps == ["list", "dispatch"] * 8
    assert max(held) - before <= 5  # one page's events, whatever the bucket holds


def test_the_rate_limiter_spaces_objects_evenly():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(round(seconds, 3))
        now[0] += seconds

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.wait(5)
    assert slept == [0.5, 0.5]  # 5 objects at once, then 5 per half second
    assert core.chunk_size_for(2.5) == 2 and core.chunk_size_for(None) == core.CHUNK_SIZE


def test_rate_slows_the_backfill_down(s3, monkeypatch):
    put(s3, "a.csv", "b.csv", "c.csv")
    bind(COUNT, BUCKET)
    slept = []
    monkeypatch.setattr(core.time, "sleep", slept.append)
    assert backfill(BUCKET, "--rate", "1")[0] == 0
    # one object per second from the first (the stand-in sleep lets no time pass)
    assert len(slept) == 2 and 0 < slept[0] <= 1 < slept[1] <= 2


def test_without_a_terminal_progress_is_a_log_line_every_few_seconds(s3, monkeypatch, caplog):
    from s3tasks.management import backfill_output

    put(s3, *[f"k/{n}.csv" for n in range(4)])
    bind(COUNT, BUCKET)
    monkeypatch.setattr(backfill_output, "LOG_INTERVAL", 0.0)
    caplog.set_level("INFO", logger="s3tasks.backfill")
    assert backfill(BUCKET, "--page-size", "2", "--count")[0] == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "s3tasks.backfill"]
    assert lines and "listed 4/4" in lines[-1] and "objects/s" in lines[-1]
    assert "dispatched 4" in lines[-1] and "skipped 0" in lines[-1]


def test_on_a_terminal_progress_is_a_rich_bar_with_speed_eta_and_counters(s3):
    from io import StringIO

    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    put(s3, "a.csv", "b.csv")
    bind(COUNT, BUCKET)
    out = Terminal()
    call_command("s3tasks_backfill", BUCKET, "--count", stdout=out)
    text = out.getvalue()
    assert "objects/s" in text and "2/2" in text and "dispatched 2" in text


# --- routing and Celery ---------------------------------------------------------------------------


def test_a_named_handler_bound_by_a_rule_keeps_that_binding_s_celery_queue():
    from s3tasks.rules.routing import route

    binding = bind(OTHER, BUCKET, events=("s3:ObjectCreated:Post",))
    binding.celery_queue = "imports"
    binding.save()
    bind(COUNT, BUCKET)
    obj = {"Key": "a.csv", "ETag": '"e"', "Size": 1, "LastModified": datetime.now(UTC)}

    named = route(backfill_event(BUCKET, obj, region="r", backfill_id=1, handlers=(OTHER,)))
    ruled = route(backfill_event(BUCKET, obj, region="r", backfill_id=1))

    assert [(r.handler_name, r.celery_queue) for r in named] == [(OTHER, "imports")]
    assert sorted(r.handler_name for r in ruled) == sorted([OTHER, COUNT])


@pytest.mark.django_db(transaction=True)  # Celery sends wait for the commit
def test_with_celery_each_run_is_sent_once_and_a_rerun_sends_nothing(s3, monkeypatch):
    from tests.celery_support import SentTasks

    put(s3, "a.csv", "b.csv")
    bind(OTHER, BUCKET)
    sent = SentTasks(monkeypatch, OTHER)

    assert backfill(BUCKET, "--dispatch", "celery")[0] == 0
    assert backfill(BUCKET, "--dispatch", "celery")[0] == 0

    assert sorted(call["args"][0]["key"] for call in sent.calls) == ["a.csv", "b.csv"]
    assert {call["args"][0]["source"] for call in sent.calls} == {"backfill"}
    first, second = Backfill.objects.order_by("pk")
    assert (first.mode, first.dispatched, second.dispatched, second.skipped) == ("celery", 2, 0, 2)


def test_a_backfill_whose_handler_is_gone_is_not_taken_over_by_resume(s3):
    row = start_backfill(BackfillRequest(BUCKET, handlers=(COUNT,), mode="inline"))
    Backfill.objects.filter(pk=row.pk).update(state="interrupted", handlers=["gone.handler"])
    with pytest.raises(BackfillError, match="no registered handler named 'gone.handler'"):
        resume_backfill(row.pk)
    assert Backfill.objects.get().state == "interrupted"
