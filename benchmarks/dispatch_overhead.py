"""Dispatch overhead per event: record + claim + run a no-op handler (inline) or record + send
its Celery task (celery), on SQLite and PostgreSQL; `batch10` is inline through
`dispatch_batch` in batches of 10 (what the worker and Lambda do with a received batch).

Baseline, measured in the same run on the same database: the bare `objects.create` of the same
two rows (`EventRecord` + `HandlerRun`) per event — the least any bookkeeping could cost.
Celery mode sends to Redis (127.0.0.1:6379/2) when it is up, else to Celery's in-memory
transport. Each database runs in a child process (Django's settings are fixed at setup).

    python benchmarks/dispatch_overhead.py [--events 500] [--db sqlite,postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s3tasks.emulator import port_open  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/2"
PG_BENCH_DB = "bench_s3tasks_dispatch"
MODES = ("baseline", "inline", "batch10", "batch10_nodb", "celery", "duplicate")
BATCH = 10


# --- child: one database ------------------------------------------------------------------


def make_events(count: int, tag: str) -> list:
    from s3tasks.events import EventSource, S3Event

    when = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        S3Event(
            bucket="bench-bucket",
            key=f"{tag}/incoming/{i:06d}.csv",
            event_name="ObjectCreated:Put",
            event_time=when,
            size=1024,
            etag=f"etag{i}",
            sequencer=f"{i:016X}",
            region="us-east-1",
            source=EventSource.S3,
            raw={"eventName": "ObjectCreated:Put", "s3": {"object": {"key": f"{i}.csv"}}},
        )
        for i in range(count)
    ]


def baseline(events: list) -> None:
    from s3tasks.models import EventRecord, HandlerRun

    for e in events:
        record = EventRecord.objects.create(
            dedup_key=e.dedup_key, bucket=e.bucket, key=e.key, event_name=e.event_name,
            event_time=e.event_time, size=e.size, etag=e.etag, sequencer=e.sequencer,
            region=e.region, source=e.source, payload=e.to_dict(),
        )  # fmt: skip
        HandlerRun.objects.create(event=record, handler_name="benchmarks.noop")


def timed(label: str, func, events: list) -> float:
    began = time.perf_counter()
    func(events)
    per_event_ms = (time.perf_counter() - began) * 1000 / len(events)
    print(f"  {label}: {per_event_ms:.3f} ms/event", file=sys.stderr)
    return per_event_ms


def child(db: str, count: int) -> dict[str, float]:
    import django

    django.setup()
    from django.core.management import call_command

    from s3tasks.processing.dispatch import BatchItem, dispatch_batch, dispatch_event
    from s3tasks.rules.registry import s3_handler
    from s3tasks.rules.routing import Route

    @s3_handler(name="benchmarks.noop")
    def noop(event) -> None:
        return None

    @s3_handler(name="benchmarks.noop_nodb", uses_database=False)
    def noop_nodb(event) -> None:
        return None

    call_command("migrate", verbosity=0)
    routes = [Route("benchmarks.noop")]

    def dispatch_all(mode: str):
        return lambda events: [dispatch_event(e, routes=routes, mode=mode) for e in events]

    def dispatch_batches(events: list, chosen: list | None = None) -> None:
        for start in range(0, len(events), BATCH):
            chunk = [BatchItem(e, chosen or routes) for e in events[start : start + BATCH]]
            dispatch_batch(chunk, mode="inline")

    def dispatch_batches_nodb(events: list) -> None:
        dispatch_batches(events, [Route("benchmarks.noop_nodb")])

    warm = make_events(20, "warm")
    dispatch_all("inline")(warm)
    dispatch_all("celery")(warm)
    results = {"baseline": timed("baseline", baseline, make_events(count, "base"))}
    results["inline"] = timed("inline", dispatch_all("inline"), make_events(count, "inline"))
    results["batch10"] = timed("batch10", dispatch_batches, make_events(count, "batch10"))
    results["batch10_nodb"] = timed(
        "batch10_nodb", dispatch_batches_nodb, make_events(count, "batch10_nodb")
    )
    celery_events = make_events(count, "celery")
    results["celery"] = timed("celery", dispatch_all("celery"), celery_events)
    results["duplicate"] = timed("duplicate", dispatch_all("celery"), celery_events)
    return results


# --- parent: table and docs ---------------------------------------------------------------


def child_env(db: str) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "S3TASKS_DB": db}
    env["S3TASKS_DEV"] = "1"  # the example project's throwaway SECRET_KEY
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["S3TASKS_LOG"] = "WARNING"
    env["CELERY_BROKER_URL"] = REDIS_URL if port_open(6379) else "memory://"
    if db == "sqlite":
        env["S3TASKS_SQLITE_PATH"] = os.path.join(tempfile.mkdtemp(), "bench.sqlite3")
    else:
        env["PGDATABASE"] = PG_BENCH_DB
    return env


def recreate_pg_database() -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
        c.execute(f"CREATE DATABASE {PG_BENCH_DB}")


def run_child(db: str, count: int) -> dict[str, float] | None:
    if db == "postgres":
        if not port_open(5432):
            print("PostgreSQL not reachable on 127.0.0.1:5432: skipped", file=sys.stderr)
            return None
        recreate_pg_database()
    env = child_env(db)
    if env["CELERY_BROKER_URL"] == REDIS_URL:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
    print(f"{db} (broker {env['CELERY_BROKER_URL']}):", file=sys.stderr)
    out = subprocess.run(
        [sys.executable, __file__, "--child", db, "--events", str(count)],
        env=env, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "database | baseline ms | inline ms (ratio) | batch10 ms (ratio) | batch10_nodb ms "
        "(ratio) | celery ms (ratio) | duplicate ms (ratio)",
        "-" * 130,
    ]
    for db, r in results.items():
        base = r["baseline"]
        cells = [f"{r[m]:.3f} ({r[m] / base:.2f}x)" for m in MODES[1:]]
        lines.append(
            f"{db:>8} | {base:11.3f} | {cells[0]:>17} | {cells[1]:>18} | {cells[2]:>23} "
            f"| {cells[3]:>17} | {cells[4]:>20}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500, help="events per mode (default 500)")
    parser.add_argument("--db", default="sqlite,postgres", help="databases, comma separated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.events)))
        return 0
    before = os.getloadavg()[0]
    results = {}
    for db in args.db.split(","):
        found = run_child(db, args.events)
        if found is not None:
            results[db] = found
    print(table(results))
    print(f"load average (1 min): {before:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
