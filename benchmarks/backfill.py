"""Backfill throughput and memory on moto's HTTP server, with an inline no-op handler.

1. Baseline, measured in the same run against the same server and bucket: a bare loop that a
   user would write — boto3's ListObjectsV2 paginator, an `S3Event` per object and
   `dispatch_batch` (inline) per 100 objects.
2. `manage.py s3tasks_backfill BUCKET --dispatch inline`: the same objects through the real
   command (routing, the exactly-once path, progress committed per chunk). Target: objects/s
   >= 0.8x the baseline. Each of the two runs in a child process of its own, which reports its
   peak RSS (`resource.getrusage`) and how much it grew over the RSS it started the loop with.
   Both first go over 20 other objects once, untimed: first-call costs (imports, the rules
   cache, a boto3 client) are not throughput, and would swamp a small `--objects`.
3. `--enqueue`: the command sends the objects to SQS (SendMessageBatch) for two `sqs_worker`
   processes already polling; timed from the command's start until every object's run has
   succeeded.

The 1-minute load average is printed beside every figure: on a busy machine, compare ratios,
not rates.

    python benchmarks/backfill.py [--objects 10000] [--db sqlite|postgres] [--workers 2]
        [--concurrency 4] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s3tasks.emulator import LocalEmulator, port_open  # noqa: E402

BUCKET = "bench-backfill"
QUEUE = "bench-backfill-events"
PG_BENCH_DB = "bench_s3tasks_backfill"
EXTRA_APP = "tests.worker_app"  # its NOOP handler
CHUNK = 100  # objects per dispatch_batch call, as the backfill's chunk
PREFIX = "in/"  # the measured objects
WARM_PREFIX = "warm/"  # a few objects each run goes over once before the clock starts
WARM_OBJECTS = 20
UPLOAD_THREADS = 8


def load() -> float:
    return os.getloadavg()[0]


def setup_django() -> None:
    import django

    django.setup()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- children: each step in a process of its own --------------------------------------------


def endpoint() -> str:
    return os.environ["S3TASKS_ENDPOINT_URL"]


def prepare(objects: int) -> dict:
    """Migrate, bind the no-op handler to the bucket, fill the bucket."""
    from django.core.management import call_command

    from tests.worker_app.handlers import NOOP
    from tests.worker_support import bind

    call_command("migrate", verbosity=0)
    bind(NOOP, BUCKET)
    seconds = upload(objects, PREFIX)
    upload(WARM_OBJECTS, WARM_PREFIX)
    return {"seconds": seconds, "load": load()}


def upload(count: int, prefix: str) -> float:
    """`count` small objects under `prefix`, on UPLOAD_THREADS threads; seconds taken."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint(), region_name="us-east-1")
    if prefix == PREFIX:
        s3.create_bucket(Bucket=BUCKET)
    keys = [f"{prefix}{n:07d}.csv" for n in range(count)]

    def put(part: list[str]) -> None:
        for key in part:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"a,b\n1,2\n")

    threads = [
        threading.Thread(target=put, args=(keys[i::UPLOAD_THREADS],)) for i in range(UPLOAD_THREADS)
    ]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began


def bare_loop(s3: Any, prefix: str) -> int:
    """boto3's paginator + an S3Event per object + dispatch_batch per CHUNK; objects seen."""
    from s3tasks.events import EventSource, S3Event
    from s3tasks.processing.dispatch import BatchItem, dispatch_batch
    from s3tasks.rules.routing import Route
    from tests.worker_app.handlers import NOOP

    routes = [Route(NOOP)]
    seen = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        objects = page.get("Contents", [])
        for start in range(0, len(objects), CHUNK):
            items = []
            for obj in objects[start : start + CHUNK]:
                seen += 1
                raw = {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": obj["Key"]}}}
                event = S3Event(
                    bucket=BUCKET,
                    key=obj["Key"],
                    event_name="ObjectCreated:Put",
                    event_time=obj["LastModified"],
                    size=obj["Size"],
                    etag=obj["ETag"].strip('"'),
                    sequencer=f"{seen:016X}",  # its own dedup key: not the backfill's
                    region="us-east-1",
                    source=EventSource.S3,
                    raw=raw,
                )
                items.append(BatchItem(event, routes))
            dispatch_batch(items, mode="inline")
    return seen


def backfill_command(prefix: str) -> int:
    from django.core.management import call_command

    from s3tasks.models import Backfill

    with open(os.devnull, "w") as quiet:
        options = ["--prefix", prefix, "--dispatch", "inline"]
        call_command("s3tasks_backfill", BUCKET, *options, stdout=quiet)
    row = Backfill.objects.latest("pk")
    assert row.state == "completed" and row.dispatched == row.listed, row.errors
    return row.listed


def warm_up() -> Any:
    """What either run pays once, whatever the bucket holds, paid before the clock starts:
    boto3's import and an S3 client (s3tasks keeps its own per thread, which the command
    reuses). Returns the bare loop's client."""
    import boto3

    from s3tasks import aws

    aws.client("s3").head_bucket(Bucket=BUCKET)
    s3 = boto3.client("s3", endpoint_url=endpoint(), region_name="us-east-1")
    s3.head_bucket(Bucket=BUCKET)
    return s3


def measured(which: str, profile: bool) -> dict:
    """One timed run (bare or backfill), with this process's peak RSS."""
    s3 = warm_up()
    run = partial(bare_loop, s3) if which == "bare" else backfill_command
    run(WARM_PREFIX)  # first-call costs (imports, the rules cache, ...) are not throughput
    start_rss = rss_mb()
    profiler = None
    if profile and which == "backfill":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    began = time.perf_counter()
    objects = run(PREFIX)
    seconds = time.perf_counter() - began
    if profiler is not None:
        import pstats

        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
    peak = rss_mb()
    return {
        "objects": objects,
        "seconds": seconds,
        "rate": objects / seconds,
        "peak_rss_mb": peak,
        "rss_growth_mb": peak - start_rss,
        "load": load(),
    }


def enqueue_with_workers(args: argparse.Namespace) -> dict:
    """History emptied, `args.workers` `sqs_worker` processes polling, then the command's
    `--enqueue` (in this process: its own start-up is not timed); timed until every run
    succeeded."""
    import boto3
    from django.core.management import call_command

    from s3tasks.models import EventRecord, HandlerRun, NotificationRule, Queue, RunState

    workdir = Path(os.environ["BENCH_WORKDIR"])
    EventRecord.objects.all().delete()  # the inline runs would make the workers skip everything
    sqs = boto3.client("sqs", endpoint_url=endpoint(), region_name="us-east-1")
    sqs.create_queue(QueueName=QUEUE, Attributes={"VisibilityTimeout": "120"})
    NotificationRule.objects.update(queue=Queue.objects.get_or_create(name=QUEUE)[0])
    workers, beats = [], []
    for n in range(args.workers):
        beat = workdir / f"worker-{n}.alive"
        command = [sys.executable, str(ROOT / "manage.py"), "sqs_worker", "--queue", QUEUE]
        command += ["--dispatch", "inline", "--concurrency", str(args.concurrency)]
        command += ["--wait-time", "1", "--stats-interval", "3600", "--heartbeat-file", str(beat)]
        log = (workdir / f"worker-{n}.log").open("wb")
        workers.append(subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log))
        beats.append(beat)
    try:
        deadline = time.monotonic() + 60
        while not all(b.exists() for b in beats):  # every worker is polling
            if time.monotonic() > deadline:
                raise SystemExit(f"sqs_worker did not start; see {workdir}/worker-*.log")
            time.sleep(0.1)
        began = time.perf_counter()
        with open(os.devnull, "w") as quiet:
            call_command("s3tasks_backfill", BUCKET, "--prefix", PREFIX, "--enqueue", stdout=quiet)
        sent, sent_load = time.perf_counter() - began, load()
        done = HandlerRun.objects.filter(state=RunState.SUCCEEDED)
        deadline = time.monotonic() + 60 + args.objects / 10
        while done.count() < args.objects:
            if time.monotonic() > deadline:
                raise SystemExit(f"workers ran {done.count()} of {args.objects}; see {workdir}")
            time.sleep(0.25)
        handled = time.perf_counter() - began
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    return {
        "send_seconds": sent,
        "send_rate": args.objects / sent,
        "send_load": sent_load,
        "handled_seconds": handled,
        "handled_rate": args.objects / handled,
        "handled_load": load(),
    }


def child(args: argparse.Namespace) -> dict:
    setup_django()
    if args.child == "prepare":
        return prepare(args.objects)
    if args.child == "enqueue":
        return enqueue_with_workers(args)
    return measured(args.child, args.profile)


# --- parent: the emulator, the steps, the table ------------------------------------------------


def bench_env(db: str, endpoint: str, workdir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "S3TASKS_DEV": "1",  # the example project's throwaway SECRET_KEY
        "DJANGO_DEBUG": "0",  # as in production: no query log
        "S3TASKS_DB": db,
        "S3TASKS_ENDPOINT_URL": endpoint,
        "S3TASKS_DISPATCH": "inline",
        "S3TASKS_EXTRA_APPS": EXTRA_APP,
        "S3TASKS_LOG": "WARNING",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "BENCH_WORKDIR": str(workdir),
    }
    if db == "sqlite":
        env["S3TASKS_SQLITE_PATH"] = str(workdir / "bench.sqlite3")
    else:
        env["PGDATABASE"] = PG_BENCH_DB
    return env


def recreate_pg_database() -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
        c.execute(f"CREATE DATABASE {PG_BENCH_DB}")


def run_child(which: str, env: dict[str, str], args: argparse.Namespace) -> dict:
    """One step in a child process. Django is loaded only in children, so the peak RSS that
    `getrusage` reports for a measured run is that run's own (Linux carries a parent's maxrss
    across fork and exec: this parent stays small)."""
    command = [sys.executable, __file__, "--child", which, "--objects", str(args.objects)]
    command += ["--workers", str(args.workers), "--concurrency", str(args.concurrency)]
    command += ["--profile"] if args.profile else []
    out = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the {which} step failed:\n{out.stderr[-4000:]}")
    if args.profile and which == "backfill":
        print(out.stderr[-12000:], file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def line(label: str, seconds: str, rate: str, rss: str, load_avg: float) -> str:
    return f" {label:<43} | {seconds:>7} | {rate:>9} | {rss:>20} | {load_avg:4.2f}"


def report(args: argparse.Namespace, r: dict) -> None:
    bare, backfill, enqueue = r["bare"], r["backfill"], r.get("enqueue")
    print(
        f"\nBackfill of {args.objects:,} objects on moto's server ({args.db}, inline no-op "
        f"handler); uploaded in {r['prepare']['seconds']:.1f} s (load {r['prepare']['load']:.2f})"
    )
    print(f" {'run':<43} | seconds | objects/s | peak RSS MB (growth) | load")
    print("-" * 98)
    for label, row in (
        ("bare boto3 list + dispatch_batch (baseline)", bare),
        ("s3tasks_backfill --dispatch inline", backfill),
    ):
        rss = f"{row['peak_rss_mb']:.1f} ({row['rss_growth_mb']:+.1f})"
        print(line(label, f"{row['seconds']:.2f}", f"{row['rate']:.0f}", rss, row["load"]))
    ratio = f"{backfill['rate'] / bare['rate']:.2f}x"
    print(line("ratio backfill / baseline (target >= 0.8x)", "", ratio, "", backfill["load"]))
    if enqueue:
        for label, what in (
            ("--enqueue: sent (SendMessageBatch)", "send"),
            (f"--enqueue: all run by {args.workers} sqs_worker", "handled"),
        ):
            seconds, rate = f"{enqueue[what + '_seconds']:.2f}", f"{enqueue[what + '_rate']:.0f}"
            print(line(label, seconds, rate, "", enqueue[what + "_load"]))
    print(" (peak RSS of the run's own process; growth: over its RSS when the loop started)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10_000, help="objects in the bucket")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=2, help="sqs_worker processes (0: skip)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per sqs_worker")
    parser.add_argument("--profile", action="store_true", help="cProfile the backfill run")
    parser.add_argument(
        "--child", choices=("prepare", "bare", "backfill", "enqueue"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.db == "postgres":
        if not port_open(5432):
            raise SystemExit("PostgreSQL not reachable on 127.0.0.1:5432")
        recreate_pg_database()
    workdir = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    with LocalEmulator(log_path=workdir / "moto.log") as moto:
        env = bench_env(args.db, moto.url, workdir)
        steps = ["prepare", "bare", "backfill"] + (["enqueue"] if args.workers else [])
        results = {step: run_child(step, env, args) for step in steps}
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
