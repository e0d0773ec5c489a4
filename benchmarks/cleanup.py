"""Pipeline throughput while history is pruned.

The pipeline ceiling of worker_throughput.py (its `pipeline_run`: a `Consumer` on MemorySQS,
inline dispatch, no-op handler, full exactly-once bookkeeping) is timed, in one child process
per database, after ROWS old history rows (half events, half their succeeded runs, 60 days
old) were written:

(a) alone, in --baseline-rounds rounds of --events events (the baseline);
(b) while `cleanup_history` deletes those rows on another thread of the same process, as a
    worker's cleanup timer would, in batches of --batch-size: rounds of --events events until
    the cleanup has finished.

Target: (b) >= 0.8 x (a). Also shown: how long the cleanup took, rows deleted per second, its
longest batch transaction, and the 1-minute load average after each phase (a loaded machine
stretches every figure).

    python benchmarks/cleanup.py [--rows 1000000] [--events 2000] [--concurrency 8]
        [--batch-size 1000] [--baseline-rounds 3] [--db postgres,sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.worker_throughput import BUCKET, pipeline_run, setup_django  # noqa: E402
from s3tasks.emulator import port_open  # noqa: E402

PG_BENCH_DB = "bench_s3tasks_cleanup"
AGE = timedelta(days=60)
RETENTION = timedelta(days=30)
FILL_CHUNK = 5000


def load() -> float:
    return os.getloadavg()[0]


def fill_history(rows: int) -> float:
    """Write `rows` old history rows (rows/2 events, each with one succeeded run); seconds."""
    from django.utils import timezone

    from s3tasks.models import EventRecord, HandlerRun, RunState

    began = time.perf_counter()
    when = timezone.now() - AGE
    events = rows // 2
    for start in range(0, events, FILL_CHUNK):
        chunk = range(start, min(events, start + FILL_CHUNK))
        records = EventRecord.objects.bulk_create(
            EventRecord(
                dedup_key=f"old-{i:09d}",
                bucket=BUCKET,
                key=f"old/{i:09d}",
                event_name="ObjectCreated:Put",
                source="s3",
                received_at=when + timedelta(milliseconds=i),  # 1,000 events/s
            )
            for i in chunk
        )
        HandlerRun.objects.bulk_create(
            HandlerRun(
                event_id=r.pk,
                handler_name="bench.old",
                state=RunState.SUCCEEDED,
                created_at=r.received_at,
                finished_at=r.received_at,
            )
            for r in records
        )
    return time.perf_counter() - began


def rounds_rate(sqs, tag: str, events: int, concurrency: int, until) -> tuple[float, int, float]:
    """Pipeline rounds of `events` until `until(rounds)` is true (checked after each round);
    (events per second over all rounds, rounds, seconds)."""
    handled, seconds, rounds = 0, 0.0, 0
    while True:
        took, done = pipeline_run(sqs, f"{tag}-{rounds}", events, concurrency)
        handled, seconds, rounds = handled + done, seconds + took, rounds + 1
        if until(rounds):
            return handled / seconds, rounds, seconds


def child(args: argparse.Namespace) -> dict:
    from django.db import connection

    from s3tasks.ops.cleanup import cleanup_history
    from s3tasks.worker.memory_sqs import MemorySQS
    from tests.worker_app.handlers import NOOP
    from tests.worker_support import bind

    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        bind(NOOP, BUCKET)
        sqs = MemorySQS()
        pipeline_run(sqs, "warmup", 50, args.concurrency)
        fill_seconds = fill_history(args.rows)
        base_rate, base_rounds, _ = rounds_rate(
            sqs, "base", args.events, args.concurrency, lambda n: n >= args.baseline_rounds
        )
        base_load = load()

        result: dict = {}

        def clean() -> None:
            try:
                report = cleanup_history(RETENTION, batch_size=args.batch_size)
                result.update(
                    deleted=report.total,
                    seconds=report.seconds,
                    batches=report.batches,
                    longest_batch_ms=report.longest_batch * 1000,
                    errors=report.errors,
                )
            finally:
                connection.close()

        cleaner = threading.Thread(target=clean)
        cleaner.start()
        during_rate, during_rounds, during_seconds = rounds_rate(
            sqs, "during", args.events, args.concurrency, lambda n: not cleaner.is_alive()
        )
        during_load = load()
        cleaner.join()
        return {
            "db": connection.vendor,
            "rows": args.rows,
            "fill_seconds": fill_seconds,
            "base_rate": base_rate,
            "base_rounds": base_rounds,
            "base_load": base_load,
            "during_rate": during_rate,
            "during_rounds": during_rounds,
            "during_seconds": during_seconds,
            "during_load": during_load,
            "cleanup": result,
        }
    finally:
        connection.close()
        connection.creation.destroy_test_db(name, verbosity=0)


def run_child(db: str, args: argparse.Namespace) -> dict:
    env = {
        **os.environ,
        "S3TASKS_DB": db,
        "S3TASKS_CONN_MAX_AGE": "60",
        "DJANGO_DEBUG": "0",  # as in production: no query log, no debug cursor
        "S3TASKS_DEV": "1",  # the example project's throwaway SECRET_KEY
        "S3TASKS_PG_TEST_NAME": PG_BENCH_DB,
        "S3TASKS_SQLITE_TEST_PATH": str(Path(tempfile.gettempdir()) / "bench-cleanup.sqlite3"),
    }
    command = [sys.executable, __file__, "--child"] + [
        f"--{name.replace('_', '-')}={value}"
        for name, value in vars(args).items()
        if name not in ("child", "db")
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"cleanup benchmark on {db} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_result(r: dict, args: argparse.Namespace) -> None:
    c = r["cleanup"]
    ratio = r["during_rate"] / r["base_rate"]
    overlap = min(1.0, c["seconds"] / r["during_seconds"])
    print(
        f"\nPipeline during cleanup of {r['rows']:,} history rows ({r['db']}, MemorySQS, inline, "
        f"no-op handler, {args.concurrency} threads, rounds of {args.events} events, cleanup "
        f"batches of {args.batch_size})"
    )
    rows = [
        (f"pipeline alone, events/s ({r['base_rounds']} rounds)", r["base_rate"], r["base_load"]),
        (
            f"pipeline during cleanup, events/s ({r['during_rounds']} rounds)",
            r["during_rate"],
            r["during_load"],
        ),
        ("ratio (target >= 0.80)", ratio, None),
        ("share of those rounds the cleanup ran", overlap, None),
        ("cleanup: rows deleted", c["deleted"], r["during_load"]),
        ("cleanup: seconds", c["seconds"], r["during_load"]),
        ("cleanup: rows/s", c["deleted"] / c["seconds"], r["during_load"]),
        ("cleanup: longest batch transaction, ms", c["longest_batch_ms"], r["during_load"]),
    ]
    print(f" {'figure':<46} |     value | load avg (1 min)")
    print("-" * 80)
    for label, value, load_avg in rows:
        shown = f"{value:9.2f}" if value < 10 else f"{value:9.0f}"
        print(f" {label:<46} | {shown} | " + (f"{load_avg:5.2f}" if load_avg is not None else ""))
    print(f" (writing the rows took {r['fill_seconds']:.1f}s; not measured above)")
    if overlap < 0.8:
        print(" (the cleanup ended early in the rounds: use more --rows for a meaningful ratio)")
    if c["errors"]:
        print(f" cleanup errors: {c['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="history rows to delete")
    parser.add_argument("--events", type=int, default=2000, help="events per pipeline round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--baseline-rounds", type=int, default=3)
    parser.add_argument("--db", default="postgres", help="postgres, sqlite or both")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        setup_django({})
        print(json.dumps(child(args)))
        return
    for db in args.db.split(","):
        if db == "postgres" and not port_open(5432):
            print("PostgreSQL not reachable on 127.0.0.1:5432; skipped", file=sys.stderr)
            continue
        print_result(run_child(db, args), args)


if __name__ == "__main__":
    main()
