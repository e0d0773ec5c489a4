"""Worker throughput, in two parts.

1. End to end over HTTP: a queue on moto's server pre-filled with N S3-event messages, drained
   by (a) a bare boto3 loop (receive 10 + DeleteMessageBatch, same thread count) and (b)
   `manage.py sqs_worker --dispatch inline` with a no-op handler, recording every event. Both
   run in this run, against the same server and the same queue depth. moto is slow and single
   core, so this measures our overhead on the wire, not our ceiling. Target: ratio >= 0.8.
2. The pipeline ceiling: the same `Consumer` fed by `MemorySQS` (answers instantly), with full
   record-keeping and exactly-once bookkeeping (inline dispatch, no-op handler), on SQLite and
   PostgreSQL. Target: >= 1,200 events/s per process on PostgreSQL. `--handler noop_nodb`
   uses a no-op handler declared `uses_database=False` (no savepoint pair per run). Beside
   this process's CPU per event, the CPU PostgreSQL's processes used per event (from
   /proc, Linux only): both share the machine's cores.

    python benchmarks/worker_throughput.py [--part all|http|ceiling] [--messages 300]
        [--events 2000] [--concurrency 8] [--db sqlite,postgres] [--conn-max-age 60]
        [--handler noop|noop_nodb] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s3tasks.emulator import LocalEmulator, port_open  # noqa: E402

PG_BENCH_DB = "bench_s3tasks_worker"
BUCKET = "bench-worker"
EXTRA_APP = "tests.worker_app"


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("S3TASKS_DEV", "1")  # the example project's throwaway SECRET_KEY
    os.environ["S3TASKS_EXTRA_APPS"] = EXTRA_APP
    os.environ.setdefault("S3TASKS_LOG", "WARNING")
    import django

    django.setup()


# --- part 2: the pipeline ceiling (child process per database) ---------------------------------


class StatementMeter:
    """Counts SQL statements and the wall time spent in them, on every thread's connection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.seconds = 0.0

    def install(self) -> None:
        from django.db.backends.signals import connection_created

        connection_created.connect(self._wrap, weak=False)

    def _wrap(self, connection, **kwargs) -> None:
        if self not in connection.execute_wrappers:  # fired again on every reconnect
            connection.execute_wrappers.append(self)

    def __call__(self, execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            with self.lock:
                self.count += 1
                self.seconds += time.perf_counter() - began


def parse_only(message, dispatch_mode=None):
    """A `process_message` stand-in that parses and does nothing else (the loop's own cost)."""
    from s3tasks.envelopes import parse_message
    from s3tasks.processing.messages import MessageOutcome, Status

    events = parse_message(message.body).events
    return MessageOutcome(message.message_id, Status.HANDLED, events=len(events))


def profile_one_thread(count: int) -> None:
    """cProfile `process_messages` (batches of 10) on this thread (cProfile sees one thread),
    to stderr."""
    import cProfile
    import pstats

    from s3tasks.processing.messages import InboundMessage, process_messages
    from tests.worker_support import s3_body

    messages = [InboundMessage(f"p{i}", s3_body(BUCKET, f"profile/{i:06d}")) for i in range(count)]
    profiler = cProfile.Profile()
    profiler.enable()
    for start in range(0, count, 10):
        process_messages(messages[start : start + 10], dispatch_mode="inline")
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)


def pipeline_run(sqs, tag: str, count: int, concurrency: int, process=None) -> tuple[float, int]:
    """Queue `count` events on MemorySQS queue "bench" and drain them with a `Consumer` (inline
    dispatch, no-op handler); return (seconds, events handled)."""
    from s3tasks.worker import Consumer, SqsQueueClient, WorkerOptions
    from tests.worker_support import s3_body

    url = sqs.create_queue(QueueName="bench")["QueueUrl"]
    for i in range(count):
        sqs.send_message(QueueUrl=url, MessageBody=s3_body(BUCKET, f"{tag}/{i:06d}"))
    client = SqsQueueClient(sqs)
    options = WorkerOptions(
        concurrency=concurrency, wait_time=0, dispatch="inline", stats_interval=3600
    )
    extra = {"process": process} if process else {}
    consumer = Consumer(client, [client.resolve("bench")], options, **extra)
    thread = threading.Thread(target=consumer.run)
    began = time.perf_counter()
    thread.start()
    while consumer.stats.snapshot().deleted < count:
        time.sleep(0.002)
    took = time.perf_counter() - began
    consumer.stop()
    thread.join()
    return took, consumer.stats.snapshot().events


def postgres_cpu_seconds() -> float:
    """CPU (user + system) used so far by every PostgreSQL server process on this machine."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:  # ended meanwhile, or not ours to read
            continue
        if "(postgres)" in stat:
            fields = stat.rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def ceiling_child(events: int, concurrency: int, profile: bool, handler: str) -> dict:
    from django.db import connection

    from s3tasks.worker.memory_sqs import MemorySQS
    from tests.worker_app import handlers
    from tests.worker_support import bind

    meter = StatementMeter()
    meter.install()
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        bind(handlers.NOOP_NODB if handler == "noop_nodb" else handlers.NOOP, BUCKET)
        sqs = MemorySQS()

        def run(tag: str, count: int, process=None) -> tuple[float, int]:
            return pipeline_run(sqs, tag, count, concurrency, process)

        run("warmup", 50)
        loop_took, loop_events = run("loop", events, parse_only)
        before = (meter.count, meter.seconds, time.process_time(), postgres_cpu_seconds())
        took, handled = run("bench", events)
        statements = meter.count - before[0]
        db_seconds = meter.seconds - before[1]
        cpu_seconds = time.process_time() - before[2]
        server_seconds = postgres_cpu_seconds() - before[3]
        if profile:
            profile_one_thread(300)
        from s3tasks.models import HandlerRun

        runs = HandlerRun.objects.filter(event__key__startswith="bench/").count()
        return {
            "db": connection.vendor,
            "events": handled,
            "seconds": took,
            "rate": handled / took,
            "runs": runs,
            "loop_rate": loop_events / loop_took,
            "statements_per_event": statements / handled,
            "db_ms_per_event": 1000 * db_seconds / handled,
            "cpu_ms_per_event": 1000 * cpu_seconds / handled,
            "handler": handler,
            "load": os.getloadavg()[0],
            "server_cpu_ms_per_event": (
                1000 * server_seconds / handled if connection.vendor == "postgresql" else None
            ),
        }
    finally:
        connection.close()
        connection.creation.destroy_test_db(name, verbosity=0)


def ceiling(args: argparse.Namespace) -> list[dict]:
    results = []
    for db in args.db.split(","):
        if db == "postgres" and not port_open(5432):
            print("PostgreSQL not reachable on 127.0.0.1:5432; skipped", file=sys.stderr)
            continue
        env = {
            **os.environ,
            "S3TASKS_DB": db,
            "S3TASKS_CONN_MAX_AGE": str(args.conn_max_age),
            "DJANGO_DEBUG": "0",  # as in production: no query log, no debug cursor
            "S3TASKS_DEV": "1",  # the example project's throwaway SECRET_KEY
            "S3TASKS_PG_TEST_NAME": PG_BENCH_DB,
            "S3TASKS_SQLITE_TEST_PATH": str(Path(tempfile.gettempdir()) / "bench-worker.sqlite3"),
        }
        command = [sys.executable, __file__, "--child-ceiling", "--events", str(args.events)]
        command += ["--concurrency", str(args.concurrency), "--handler", args.handler]
        command += ["--profile"] if args.profile else []
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"ceiling run on {db} failed:\n{out.stderr[-3000:]}")
        if args.profile:
            print(out.stderr[-6000:], file=sys.stderr)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


# --- part 1: end to end over HTTP ------------------------------------------------------------


def fill(sqs, url: str, tag: str, count: int) -> None:
    from tests.worker_support import s3_body

    for start in range(0, count, 10):
        entries = [
            {"Id": str(i), "MessageBody": s3_body(BUCKET, f"{tag}/{start + i:06d}")}
            for i in range(min(10, count - start))
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


def bare_loop(sqs, url: str, count: int, threads: int) -> float:
    """receive(10) + delete_message_batch on `threads` threads until `count` are deleted."""
    done = [0]
    lock = threading.Lock()

    def drain() -> None:
        while True:
            with lock:
                if done[0] >= count:
                    return
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            messages = got.get("Messages", [])
            if not messages:
                continue
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            with lock:
                done[0] += len(messages)

    workers = [threading.Thread(target=drain) for _ in range(threads)]
    began = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - began


def http(args: argparse.Namespace) -> dict:
    import boto3

    database = Path(tempfile.gettempdir()) / "bench-worker-http.sqlite3"
    database.unlink(missing_ok=True)
    moto = LocalEmulator().start()
    env = {
        **os.environ,
        "S3TASKS_DB": "sqlite",
        "S3TASKS_SQLITE_PATH": str(database),
        "S3TASKS_ENDPOINT_URL": moto.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "S3TASKS_EXTRA_APPS": EXTRA_APP,
        "S3TASKS_LOG": "WARNING",
        "S3TASKS_CONN_MAX_AGE": str(args.conn_max_age),
        "DJANGO_DEBUG": "0",
        "S3TASKS_DEV": "1",  # the example project's throwaway SECRET_KEY
        "PYTHONPATH": str(ROOT),
    }
    try:
        setup_django(env)
        from django.core.management import call_command

        from tests.worker_app.handlers import NOOP
        from tests.worker_support import bind

        call_command("migrate", verbosity=0)
        bind(NOOP, BUCKET)
        sqs = boto3.client("sqs", endpoint_url=moto.url, region_name="us-east-1")
        url = sqs.create_queue(QueueName="bench-http")["QueueUrl"]
        n, threads = args.messages, args.concurrency
        fill(sqs, url, "bare", n)
        bare = bare_loop(sqs, url, n, threads)
        fill(sqs, url, "worker", n)
        command = [sys.executable, str(ROOT / "manage.py"), "sqs_worker", "--queue", url]
        command += ["--dispatch", "inline", "--concurrency", str(threads), "--wait-time", "1"]
        command += ["--max-messages", str(n), "--stats-interval", "3600"]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        found = re.search(r"handled (\d+).* events (\d+) in ([\d.]+)s", out.stdout)
        if out.returncode != 0 or not found:
            raise SystemExit(f"sqs_worker failed:\n{out.stdout}\n{out.stderr[-3000:]}")
        handled, events, took = int(found[1]), int(found[2]), float(found[3])
        from s3tasks.models import HandlerRun

        recorded = HandlerRun.objects.filter(event__key__startswith="worker/").count()
    finally:
        moto.stop()
    return {
        "messages": n,
        "threads": threads,
        "bare_rate": n / bare,
        "worker_rate": handled / took,
        "events": events,
        "recorded_runs": recorded,
    }


# --- output ----------------------------------------------------------------------------------


def print_http(result: dict) -> None:
    ratio = result["worker_rate"] / result["bare_rate"]
    print(
        f"\nPart 1: end to end over HTTP (moto server), {result['messages']} messages, "
        f"{result['threads']} threads"
    )
    print(" consumer                               | messages/s")
    print("-" * 56)
    print(f" bare boto3 loop (receive 10 + delete)  | {result['bare_rate']:10.1f}")
    print(f" sqs_worker --dispatch inline (no-op)   | {result['worker_rate']:10.1f}")
    print(f" ratio (target >= 0.8)                  | {ratio:10.2f}")
    print(f" events recorded with a handler run     | {result['recorded_runs']:10d}")


def print_ceiling(results: list[dict], concurrency: int) -> None:
    handler = results[0]["handler"] if results else "noop"
    print(
        f"\nPart 2: pipeline ceiling (MemorySQS, inline, {handler} handler, {concurrency} threads)"
    )
    print(
        " database   | events | seconds | events/s | runs | SQL/event | ms in SQL/event"
        " | CPU ms/event | server CPU ms/event | load"
    )
    print("-" * 124)
    for r in results:
        server = r["server_cpu_ms_per_event"]
        print(
            f" {r['db']:<10} | {r['events']:6d} | {r['seconds']:7.2f} | {r['rate']:8.0f} |"
            f" {r['runs']:4d} | {r['statements_per_event']:9.1f} |"
            f" {r['db_ms_per_event']:15.2f} | {r['cpu_ms_per_event']:12.2f} |"
            f" {'-' if server is None else f'{server:.2f}':>19} | {r['load']:4.2f}"
        )
    print(
        " (ms in SQL summed over all threads; CPU = this process, all threads; server CPU ="
        " PostgreSQL's processes; load = 1-minute load average at the end)"
    )
    for r in results:
        print(f" loop only, parse but no dispatch ({r['db']} run): {r['loop_rate']:.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "http", "ceiling"), default="all")
    parser.add_argument("--messages", type=int, default=300, help="part 1 messages per run")
    parser.add_argument("--events", type=int, default=2000, help="part 2 events per database")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=60,
        help="CONN_MAX_AGE of the worker's database (60 = what docs/worker.md recommends)",
    )
    parser.add_argument(
        "--handler",
        choices=("noop", "noop_nodb"),
        default="noop",
        help="part 2: the no-op handler, or one declared uses_database=False (no savepoint)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile part 2 (to stderr)")
    parser.add_argument("--child-ceiling", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_ceiling:
        setup_django({})
        print(json.dumps(ceiling_child(args.events, args.concurrency, args.profile, args.handler)))
        return
    if args.part in ("all", "http"):
        print_http(http(args))
    if args.part in ("all", "ceiling"):
        print_ceiling(ceiling(args), args.concurrency)


if __name__ == "__main__":
    main()
