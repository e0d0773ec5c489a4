"""`manage.py s3tasks_backfill`: run handlers on the objects already in a bucket."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from s3tasks import aws
from s3tasks.conf import DISPATCH_MODES, get_settings
from s3tasks.exceptions import S3TasksError
from s3tasks.logs import add_log_format_argument, configure_command_logging
from s3tasks.management.backfill_output import (
    LogProgress,
    counter_text,
    counters_json,
    report_of,
    rich_progress,
    summary_table,
    write_report,
)
from s3tasks.models import Backfill
from s3tasks.ops.backfill import (
    BackfillResult,
    Counters,
    Progress,
    dry_run,
    request_of,
    resume_backfill,
    routed_items,
    run_backfill,
    start_backfill,
)
from s3tasks.ops.backfill_jobs import (
    JobSpec,
    S3Location,
    create_job,
    create_job_request,
    existing_manifest,
    write_manifest,
)
from s3tasks.ops.backfill_objects import PAGE_SIZE, BackfillRequest, count_objects

INTERRUPTED = 130  # exit status after Ctrl-C, as shells report SIGINT


class Command(BaseCommand):
    help = (
        "Run handlers on objects already in BUCKET: each object listed (ListObjectsV2, page "
        "by page) becomes an ObjectCreated event marked as a backfill, routed through the "
        "enabled rules for object creations (or to the handlers named with --handler) and "
        "dispatched exactly once, as a notification would be. Running it again runs nothing "
        "twice for the same object version. Progress is saved after every chunk: Ctrl-C, "
        "then --resume ID. Exit status 1 when something failed, 130 when interrupted. See "
        "docs/backfill.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("bucket", nargs="?", metavar="BUCKET", help="The bucket to list.")
        what = parser.add_argument_group("which objects and handlers")
        what.add_argument("--prefix", default="", help="Only keys starting with this.")
        what.add_argument("--suffix", default="", help="Only keys ending with this.")
        what.add_argument(
            "--handler",
            action="append",
            default=[],
            metavar="NAME",
            dest="handlers",
            help="Run only this registered handler on every listed object, whatever the "
            "rules say (repeat for several). Default: the handlers the bucket's enabled rules "
            "route object creations to.",
        )
        what.add_argument(
            "--modified-since",
            metavar="WHEN",
            help="Only objects last modified at or after WHEN (ISO date or date-time; UTC "
            "unless it says otherwise).",
        )
        what.add_argument(
            "--modified-until",
            metavar="WHEN",
            help="Only objects last modified before WHEN, e.g. when the rule was enabled: "
            "later objects were handled by their notifications.",
        )
        how = parser.add_argument_group("how")
        how.add_argument(
            "--dry-run",
            action="store_true",
            help="Count how many objects match which handler; record and run nothing.",
        )
        how.add_argument(
            "--dispatch",
            choices=DISPATCH_MODES,
            help="Run handlers inline in this process or send them to Celery (default "
            "S3TASKS['DISPATCH']).",
        )
        how.add_argument(
            "--enqueue",
            action="store_true",
            help="Send each event to its rule's SQS queue (SendMessageBatch, 10 per call) for "
            "the sqs_worker fleet to run, instead of dispatching here.",
        )
        how.add_argument(
            "--queue",
            default="",
            metavar="QUEUE",
            help="With --enqueue: send every event to this queue (name or URL).",
        )
        how.add_argument(
            "--rate", type=float, metavar="N", help="Dispatch at most N objects per second."
        )
        how.add_argument(
            "--count",
            action="store_true",
            help="List the keys once first, to show an ETA (costs one more listing).",
        )
        how.add_argument(
            "--page-size",
            type=int,
            default=PAGE_SIZE,
            metavar="N",
            help=f"Objects per ListObjectsV2 call (1..{PAGE_SIZE}, default {PAGE_SIZE}).",
        )
        how.add_argument(
            "--resume",
            type=int,
            metavar="ID",
            help="Go on with an interrupted, failed or cancelled backfill from its last "
            "committed chunk (it keeps its own bucket, filters and handlers).",
        )
        how.add_argument(
            "--report", type=Path, metavar="FILE.json", help="Also write the summary as JSON."
        )
        jobs = parser.add_argument_group("S3 Batch Operations (billions of objects)")
        jobs.add_argument(
            "--manifest",
            metavar="s3://BUCKET/KEY",
            help="Write a Batch Operations CSV manifest of the matching objects there instead "
            "of dispatching; a key ending in manifest.json names an S3 Inventory report to use "
            "as it is (with --create-job).",
        )
        jobs.add_argument(
            "--create-job",
            action="store_true",
            help="Create an S3 Batch Operations job invoking the Lambda entrypoint with "
            "--handler on every object of --manifest (without --manifest, S3 generates the "
            "manifest from --prefix, --suffix and --modified-*).",
        )
        jobs.add_argument("--function-arn", help="The Lambda function running s3tasks.")
        jobs.add_argument("--role-arn", help="The IAM role Batch Operations assumes.")
        jobs.add_argument("--account-id", help="Default: the caller's account (STS).")
        jobs.add_argument(
            "--job-report",
            metavar="s3://BUCKET/PREFIX",
            help="Where the job's completion report goes (default: beside the manifest).",
        )
        add_log_format_argument(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        configure_command_logging(opts["verbosity"], opts["log_format"])
        self._check(opts)
        try:
            if opts["manifest"] or opts["create_job"]:
                self._batch_operations(opts)
            elif opts["dry_run"]:
                self._dry_run(opts)
            else:
                self._backfill(opts)
        except S3TasksError as exc:
            raise CommandError(str(exc)) from exc

    # --- options --------------------------------------------------------------------------

    def _check(self, opts: dict[str, Any]) -> None:
        if opts["resume"] is None and not opts["bucket"]:
            raise CommandError("name the BUCKET to backfill (or --resume ID).")
        recorded = ("bucket", "prefix", "suffix", "handlers", "modified_since", "modified_until")
        recorded += ("enqueue", "queue", "dispatch", "rate")
        if opts["resume"] is not None and any(opts[name] for name in recorded):
            raise CommandError(
                "--resume goes on as the backfill was started: it takes no BUCKET, filters, "
                "handlers, --enqueue, --queue, --dispatch or --rate."
            )
        if not 1 <= opts["page_size"] <= PAGE_SIZE:
            raise CommandError(f"--page-size must be 1..{PAGE_SIZE}.")
        if opts["rate"] is not None and opts["rate"] <= 0:
            raise CommandError("--rate must be more than 0 objects per second.")
        if opts["queue"] and not opts["enqueue"]:
            raise CommandError("--queue goes with --enqueue.")
        if opts["enqueue"] and opts["dispatch"]:
            raise CommandError("--enqueue leaves dispatching to the workers: drop --dispatch.")
        if opts["create_job"]:
            missing = [
                f"--{n}" for n in ("function-arn", "role-arn") if not opts[n.replace("-", "_")]
            ]
            if missing:
                raise CommandError(f"--create-job needs {' and '.join(missing)}.")
            if len(opts["handlers"]) != 1:
                raise CommandError("--create-job runs one handler: name it with --handler.")

    def _request(self, opts: dict[str, Any]) -> BackfillRequest:
        mode = "enqueue" if opts["enqueue"] else opts["dispatch"] or get_settings().DISPATCH
        return BackfillRequest(
            bucket=opts["bucket"],
            prefix=opts["prefix"],
            suffix=opts["suffix"],
            handlers=tuple(dict.fromkeys(opts["handlers"])),
            modified_since=parse_when(opts["modified_since"], "--modified-since"),
            modified_until=parse_when(opts["modified_until"], "--modified-until"),
            mode=mode,
            queue=opts["queue"],
            rate=opts["rate"],
            region=get_settings().REGION,
        )

    # --- a backfill -----------------------------------------------------------------------

    def _backfill(self, opts: dict[str, Any]) -> None:
        if opts["resume"] is not None:
            row = resume_backfill(opts["resume"])
            self.stdout.write(f"Resuming backfill {row.pk} after {row.resume_after!r}.")
        else:
            row = start_backfill(self._request(opts), requested_by="manage.py s3tasks_backfill")
            self.stdout.write(f"Backfill {row.pk} of s3://{row.bucket}/{row.prefix} ({row.mode}).")
        if opts["count"] and row.expected is None:
            self.stdout.write("Counting the objects (--count)…")
            row.expected = count_objects(aws.client("s3"), request_of(row), opts["page_size"])
            Backfill.objects.filter(pk=row.pk).update(expected=row.expected)
        started = time.monotonic()
        try:
            with self._progress(row) as progress:
                result = run_backfill(row, progress=progress, page_size=opts["page_size"])
        except KeyboardInterrupt:
            row.refresh_from_db()
            self._summary(BackfillResult(row, Counters.of(row)), started, opts)
            raise CommandError(
                f"interrupted; go on with --resume {row.pk}", returncode=INTERRUPTED
            ) from None
        except Exception as exc:  # AWS or the database failed: say so, keep it resumable
            row.refresh_from_db()
            self._summary(BackfillResult(row, Counters.of(row)), started, opts)
            raise CommandError(
                f"backfill {row.pk} stopped: {type(exc).__name__}: {exc}; once that is fixed, "
                f"--resume {row.pk} goes on after {row.resume_after!r}"
            ) from exc
        self._summary(result, started, opts)
        if result.backfill.state == Backfill.State.CANCELLED:
            raise CommandError(f"backfill {row.pk} was cancelled; --resume {row.pk} goes on")
        if not result.ok:
            raise CommandError(
                f"{result.counters.failed} run(s) failed: " + "; ".join(result.counters.errors[:5])
            )

    @contextmanager
    def _progress(self, row: Backfill) -> Iterator[Progress]:
        """A rich progress bar on a terminal; otherwise a log line every few seconds."""
        bar = rich_progress(self.stdout) if self.stdout.isatty() else None
        if bar is None:
            yield LogProgress(row.pk, row.expected, row.listed)
            return
        with bar:
            task = bar.add_task(f"backfill {row.pk}", total=row.expected, counters="")
            start = row.listed

            def update(counters: Counters) -> None:
                bar.update(
                    task,
                    completed=counters.listed - start,
                    total=None if row.expected is None else row.expected - start,
                    counters=counter_text(counters),
                )

            yield update

    def _summary(self, result: BackfillResult, started: float, opts: dict[str, Any]) -> None:
        row, counters = result.backfill, result.counters
        seconds = time.monotonic() - started
        self.stdout.write(f"Backfill {row.pk} {row.state} in {seconds:.1f} s.")
        self.stdout.write(summary_table(counters))
        if counters.errors:
            self.stdout.write("First errors:\n  " + "\n  ".join(counters.errors[:10]))
        if opts["report"]:
            write_report(opts["report"], report_of(row, counters, seconds))

    # --- dry run ----------------------------------------------------------------------------

    def _dry_run(self, opts: dict[str, Any]) -> None:
        if opts["resume"] is not None:
            row = Backfill.objects.filter(pk=opts["resume"]).first()
            if row is None:
                raise CommandError(f"there is no backfill {opts['resume']}")
            request = request_of(row)
        else:
            request = self._request(opts)
        started = time.monotonic()
        counters = dry_run(request, page_size=opts["page_size"])
        seconds = time.monotonic() - started
        self.stdout.write(f"Dry run of s3://{request.bucket}/{request.prefix}: nothing run.")
        self.stdout.write(summary_table(counters, dry_run=True))
        if opts["report"]:
            report = {"dry_run": True, "bucket": request.bucket, "prefix": request.prefix}
            report.update(counters_json(counters), elapsed_seconds=round(seconds, 3))
            write_report(opts["report"], report)

    # --- S3 Batch Operations ----------------------------------------------------------------

    def _batch_operations(self, opts: dict[str, Any]) -> None:
        request = self._request(opts)
        s3 = aws.client("s3")
        manifest = None
        if opts["manifest"]:
            location = S3Location.parse(opts["manifest"], "--manifest")
            if location.is_inventory_manifest:
                if not opts["create_job"]:
                    raise CommandError(
                        "an S3 Inventory manifest.json is only read, by --create-job."
                    )
                manifest = existing_manifest(location, s3=s3)
            else:
                manifest = write_manifest(request, location, s3=s3, wanted=self._wanted(request))
                self.stdout.write(
                    f"Wrote {manifest.rows} object(s) to s3://{location.bucket}/{location.key}."
                )
        if not opts["create_job"]:
            return
        report = opts["job_report"] or (
            f"s3://{manifest.location.bucket}/{manifest.location.key.rsplit('.', 1)[0]}-report"
            if manifest is not None
            else ""
        )
        if not report:
            raise CommandError("--create-job without --manifest needs --job-report s3://…")
        account = opts["account_id"] or aws.client("sts").get_caller_identity()["Account"]
        spec = JobSpec(
            handler=request.handlers[0],
            function_arn=opts["function_arn"],
            role_arn=opts["role_arn"],
            account_id=account,
            report=S3Location.parse(report, "--job-report"),
        )
        job_id = create_job(aws.client("s3control"), create_job_request(spec, request, manifest))
        self.stdout.write(f"Created S3 Batch Operations job {job_id}.")

    def _wanted(self, request: BackfillRequest) -> Any:
        if request.handlers:
            return None  # the job runs the named handler on every object that passes the filters

        def routed(page: list[dict[str, Any]]) -> list[dict[str, Any]]:
            keys = {i.event.key for i in routed_items(None, request, page, Counters())}
            return [obj for obj in page if obj["Key"] in keys]

        return routed


def parse_when(text: str | None, flag: str) -> datetime | None:
    """An ISO date or date-time; without a time zone, UTC."""
    if not text:
        return None
    try:
        when = parse_datetime(text)
        if when is None:
            day = parse_date(text)
            when = datetime(day.year, day.month, day.day) if day else None
    except ValueError:
        when = None
    if when is None:
        raise CommandError(
            f"{flag} takes an ISO date or date-time such as 2024-05-01, not {text!r}."
        )
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when
