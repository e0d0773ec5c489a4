"""Dispatch overhead per event: record + claim + run a no-op handler (inline) or record + send
its Celery task (celery), on SQLite and PostgreSQL. One event per call (`inline`, `celery`,
and `duplicate`: the celery events delivered again), and through `dispatch_batch` in batches
of 10, what the worker and Lambda do with a received batch: `batch10` (inline),
`batch10_nodb` (a handler declared `uses_database=False`), `celery10` (recorded, then handed
to Celery: "durably with the broker") and the same batches delivered again, `dup10_inline`
and `dup10_celery` (every run already done or handed off: nothing runs or is sent).

Baseline, measured in the same run on the same database: the bare `objects.create` of the same
two rows (`EventRecord` + `HandlerRun`) per event — the least any bookkeeping could cost.
Celery mode sends to Redis (`--redis`, default 127.0.0.1:6379/2, flushed) when it is up, else
to Celery's in-memory transport. Each database runs in a child process (Django's settings are
fixed at setup).

    python benchmarks/dispatch_overhead.py [--events 500] [--db sqlite,postgres]
        [--redis redis://127.0.0.1:6379/2]
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
MODES = (
    "baseline",
    "inline",
    "celery",
    "duplicate",
    "batch10",
    "batch10_nodb",
    "dup10_inline",
    "celery10",
    "dup10_celery",
)
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

    def dispatch_batches(events: list, chosen: list | None = None, mode: str = "inline") -> None:
        for start in range(0, len(events), BATCH):
            chunk = [BatchItem(e, chosen or routes) for e in events[start : start + BATCH]]
            dispatch_batch(chunk, mode=mode)

    def dispatch_batches_nodb(events: list) -> None:
        dispatch_batches(events, [Route("benchmarks.noop_nodb")])

    def dispatch_batches_celery(events: list) -> None:
        dispatch_batches(events, mode="celery")

    warm = make_events(20, "warm")
    dispatch_all("inline")(warm)
    dispatch_all("celery")(warm)
    results = {"baseline": timed("baseline", baseline, make_events(count, "base"))}
    results["inline"] = timed("inline", dispatch_all("inline"), make_events(count, "inline"))
    celery_events = make_events(count, "celery")
    results["celery"] = timed("celery", dispatch_all("celery"), celery_events)
    results["duplicate"] = timed("duplicate", dispatch_all("celery"), celery_events)
    batch_events = make_events(count, "batch10")
    results["batch10"] = timed("batch10", dispatch_batches, batch_events)
    results["batch10_nodb"] = timed(
        "batch10_nodb", dispatch_batches_nodb, make_events(count, "batch10_nodb")
    )
    results["dup10_inline"] = timed("dup10_inline", dispatch_batches, batch_events)
    celery_batches = make_events(count, "celery10")
    results["celery10"] = timed("celery10", dispatch_batches_celery, celery_batches)
    results["dup10_celery"] = timed("dup10_celery", dispatch_batches_celery, celery_batches)
    return results


# --- parent: table and docs ---------------------------------------------------------------


def child_env(db: str, redis_url: str) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "S3TASKS_DB": db}
    env["S3TASKS_DEV"] = "1"  # the example project's throwaway SECRET_KEY
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["S3TASKS_LOG"] = "WARNING"
    env["CELERY_BROKER_URL"] = redis_url if port_open(6379) else "memory://"
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


def run_child(db: str, count: int, redis_url: str) -> dict[str, float] | None:
    if db == "postgres":
        if not port_open(5432):
            print("PostgreSQL not reachable on 127.0.0.1:5432: skipped", file=sys.stderr)
            return None
        recreate_pg_database()
    env = child_env(db, redis_url)
    if env["CELERY_BROKER_URL"] == redis_url:
        import redis

        redis.Redis.from_url(redis_url).flushdb()
    print(f"{db} (broker {env['CELERY_BROKER_URL']}):", file=sys.stderr)
    out = subprocess.run(
        [sys.executable, __file__, "--child", db, "--events", str(count)],
        env=env, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def table(results: dict[str, dict[str, float]]) -> str:
    """One row per mode, per database its ms/event and the ratio to that database's baseline."""
    dbs = list(results)
    lines = [
        f"{'mode':<13}" + "".join(f" | {db + ' ms/event (ratio)':>28}" for db in dbs),
        "-" * (13 + 31 * len(dbs)),
    ]
    for mode in MODES:
        cells = []
        for db in dbs:
            value, base = results[db][mode], results[db]["baseline"]
            cells.append(f" | {f'{value:.3f} ({value / base:.2f}x)':>28}")
        lines.append(f"{mode:<13}" + "".join(cells))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500, help="events per mode (default 500)")
    parser.add_argument("--db", default="sqlite,postgres", help="databases, comma separated")
    parser.add_argument("--redis", default=REDIS_URL, help=f"broker (flushed; {REDIS_URL})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.events)))
        return 0
    before = os.getloadavg()[0]
    results = {}
    for db in args.db.split(","):
        found = run_child(db, args.events, args.redis)
        if found is not None:
            results[db] = found
    print(table(results))
    print(f"load average (1 min): {before:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
