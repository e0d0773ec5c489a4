"""The Celery side: a real `celery worker` executing s3tasks handler tasks of a no-op handler,
against the same worker executing a plain no-op Celery task (the baseline), side by side.

For each pool (solo, threads, prefork) and each kind of task, N tasks are queued on Redis
first, then a worker subprocess is started and the rate is measured from its first completed
task to its last (worker start-up excluded). Kinds:

- `plain`: a plain Celery task with the handler task's arguments and options, doing nothing;
- `floor`: a plain Celery task that locks a run's row and writes it in one transaction (two
  statements and a commit through Django, no s3tasks code): the least any task that records
  its run durably can cost, so `floor / plain` bounds what `s3tasks / plain` can reach;
- `s3tasks`: a handler's task (runs pre-created by `dispatch_batch(..., mode="celery")`):
  claim the run, run a no-op handler in a savepoint, record the outcome;
- `nodb`: the same with a handler declared `uses_database=False` (no savepoint);
- `reconnect`: `s3tasks` under Celery's default, which closes Django's connections around
  every task (`CELERY_DB_REUSE_MAX` unset): a new PostgreSQL connection per task.

The worker runs `benchmarks.celery_side_settings` (the example project with
`CELERY_DB_REUSE_MAX=1000`) on PostgreSQL. Also printed: what `dispatch_batch` in celery mode
cost per event while queueing, and the statements one handler task sends (counted in
process). `--profile` adds a cProfile of handler tasks run in process.

    python benchmarks/celery_side.py [--tasks 1000] [--pools solo,threads:8,prefork:4]
        [--kinds plain,s3tasks,nodb,reconnect] [--rounds 1] [--redis redis://127.0.0.1:6379/3]
        [--profile]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.dispatch_overhead import make_events  # noqa: E402
from s3tasks.emulator import port_open  # noqa: E402

PG_BENCH_DB = "bench_s3tasks_celery_side"
QUEUE = "bench-celery-side"
UNREAD_QUEUE = "bench-celery-side-unread"  # the floor's runs are made there; nobody reads it
KINDS = ("plain", "floor", "s3tasks", "nodb", "reconnect")
BATCH = 10


@dataclass(frozen=True)
class Measured:
    round: int
    pool: str
    kind: str
    tasks: int
    rate: float  # tasks/s, first to last completion
    load: float  # 1-minute load average when it ended
    dispatch_ms: float | None = None  # dispatch_batch(celery) per event while queueing


def setup(redis_url: str) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="benchmarks.celery_side_settings",
        S3TASKS_DEV="1",  # the example project's throwaway SECRET_KEY
        S3TASKS_DB="postgres",
        PGDATABASE=PG_BENCH_DB,
        CELERY_BROKER_URL=redis_url,
        S3TASKS_LOG="WARNING",
    )
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
        c.execute(f"CREATE DATABASE {PG_BENCH_DB}")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import benchmarks.celery_side_worker  # noqa: F401  (the handlers, in this process too)


def queue_plain(events: list) -> None:
    from celery import current_app

    from benchmarks.celery_side_worker import plain_noop

    with current_app.producer_or_acquire() as producer:
        for i, event in enumerate(events):
            plain_noop.apply_async(
                args=[event.to_dict(), i], queue=QUEUE, serializer="json", producer=producer
            )


def queue_floor(events: list) -> None:
    """Make the events' runs (their tasks go to a queue nobody reads), then queue one floor
    task per run."""
    from celery import current_app

    from benchmarks.celery_side_worker import HANDLER, floor_claim
    from s3tasks.models import HandlerRun

    queue_runs(events, HANDLER, queue=UNREAD_QUEUE)
    keys = [e.key for e in events]
    run_ids = HandlerRun.objects.filter(event__key__in=keys).values_list("pk", flat=True)
    with current_app.producer_or_acquire() as producer:
        for event, run_id in zip(events, run_ids, strict=True):
            floor_claim.apply_async(
                args=[event.to_dict(), run_id], queue=QUEUE, serializer="json", producer=producer
            )


def queue_runs(events: list, handler_name: str, queue: str = QUEUE) -> float:
    """Record the events and hand their runs to Celery; returns ms per event."""
    from s3tasks.processing.dispatch import BatchItem, dispatch_batch
    from s3tasks.rules.routing import Route

    routes = [Route(handler_name, celery_queue=queue)]
    began = time.perf_counter()
    for start in range(0, len(events), BATCH):
        items = [BatchItem(e, routes) for e in events[start : start + BATCH]]
        outcomes = dispatch_batch(items, mode="celery")
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    return (time.perf_counter() - began) * 1000 / len(events)


def worker_command(pool: str) -> list[str]:
    name, _, concurrency = pool.partition(":")
    return [
        sys.executable, "-m", "celery", "-A", "project", "worker", "-P", name,
        "-c", concurrency or "1", "-Q", QUEUE, "-I", "benchmarks.celery_side_worker",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=WARNING",
    ]  # fmt: skip


def completion_times(times_dir: str) -> list[float]:
    found = []
    for name in os.listdir(times_dir):
        if not name.endswith(".times"):
            continue
        with open(os.path.join(times_dir, name)) as f:
            found += [float(line) for line in f if line.endswith("\n")]
    return found


def run_worker(pool: str, count: int, reuse: bool) -> tuple[float, float]:
    """Start a worker on the queued tasks; (tasks/s first to last completion, load after)."""
    times_dir = tempfile.mkdtemp(prefix="celery-side-")
    env = {**os.environ, "BENCH_TIMES_DIR": times_dir, "PYTHONPATH": str(ROOT)}
    env["BENCH_DB_REUSE_MAX"] = "1000" if reuse else "0"
    log = open(os.path.join(times_dir, "worker.log"), "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        worker_command(pool), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60 + count / 20
    try:
        while len(times := completion_times(times_dir)) < count:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(
                    f"{pool}: {len(times)} of {count} tasks done; worker log in {log.name}"
                )
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    times.sort()
    return (len(times) - 1) / (times[-1] - times[0]), os.getloadavg()[0]


def measure(round_: int, pool: str, kind: str, count: int) -> Measured:
    from benchmarks.celery_side_worker import HANDLER, HANDLER_NO_DB
    from s3tasks.models import HandlerRun, RunState

    tag = f"{round_}-{pool.replace(':', '')}-{kind}"
    events = make_events(count, tag)
    dispatch_ms = None
    if kind == "plain":
        queue_plain(events)
    elif kind == "floor":
        queue_floor(events)
    else:
        dispatch_ms = queue_runs(events, HANDLER_NO_DB if kind == "nodb" else HANDLER)
    rate, load = run_worker(pool, count, reuse=kind != "reconnect")
    if kind not in ("plain", "floor"):
        done = HandlerRun.objects.filter(
            event__key__startswith=f"{tag}/", state=RunState.SUCCEEDED, attempts=1
        ).count()
        assert done == count, f"{pool} {kind}: {done} of {count} runs succeeded once"
    return Measured(round_, pool, kind, count, rate, load, dispatch_ms)


def statements_per_task(samples: int = 20, profile: bool = False) -> dict[str, float]:
    """Run handler tasks in this process (`task.apply`) on runs handed off to a queue nobody
    reads; count the statements each sends (BEGIN and COMMIT included)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from benchmarks.celery_side_worker import HANDLER, HANDLER_NO_DB
    from s3tasks.models import HandlerRun
    from s3tasks.rules.registry import registry

    found = {}
    for kind, name in (("s3tasks", HANDLER), ("nodb", HANDLER_NO_DB)):
        events = make_events(samples, f"inproc-{kind}")
        queue_runs(events, name)
        runs = {r.event.key: r for r in HandlerRun.objects.filter(handler_name=name)}
        task = registry.get(name).task
        calls = [
            (e.to_dict(), runs[e.key].pk, runs[e.key].celery_task_id)
            for e in events
            if e.key in runs
        ]
        with CaptureQueriesContext(connection) as queries:
            for data, run_id, task_id in calls:
                task.apply(args=[data, run_id], task_id=task_id)
        found[kind] = len(queries) / len(calls)
        if profile and kind == "s3tasks":
            profile_tasks(task, name)
    return found


def profile_tasks(task, name: str, count: int = 300) -> None:
    import cProfile
    import pstats

    from s3tasks.models import HandlerRun

    events = make_events(count, "profiled")
    queue_runs(events, name)
    runs = {r.event.key: r for r in HandlerRun.objects.filter(event__key__startswith="profiled/")}
    calls = [(e.to_dict(), runs[e.key].pk, runs[e.key].celery_task_id) for e in events]
    profiler = cProfile.Profile()
    profiler.enable()
    for data, run_id, task_id in calls:
        task.apply(args=[data, run_id], task_id=task_id)
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def table(results: list[Measured]) -> str:
    lines = [
        "round  pool         kind        tasks   tasks/s   vs plain   dispatch ms/event   load "
        "(1 min)",
        "-" * 95,
    ]
    plain = {(r.round, r.pool): r.rate for r in results if r.kind == "plain"}
    for r in results:
        base = plain.get((r.round, r.pool))
        ratio = f"{r.rate / base:.2f}x" if base else "-"
        dispatch = f"{r.dispatch_ms:.3f}" if r.dispatch_ms is not None else "-"
        lines.append(
            f"{r.round:>5}  {r.pool:<12} {r.kind:<10} {r.tasks:>6} {r.rate:>9.0f} {ratio:>10} "
            f"{dispatch:>19} {r.load:>14.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per measurement")
    parser.add_argument(
        "--pools", default="solo,threads:8,prefork:4", help="pool[:concurrency], comma separated"
    )
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything (default 1)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/3", help="broker (flushed)")
    parser.add_argument("--profile", action="store_true", help="cProfile handler tasks")
    args = parser.parse_args()
    if not (port_open(5432) and port_open(6379)):
        print("needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379", file=sys.stderr)
        return 1
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    before = os.getloadavg()[0]
    setup(args.redis)
    flush_redis(args.redis)
    per_task = statements_per_task(profile=args.profile)
    flush_redis(args.redis)
    results = []
    for round_ in range(1, args.rounds + 1):
        for pool in args.pools.split(","):
            for kind in kinds:
                results.append(measure(round_, pool, kind, args.tasks))
                print(f"  {pool} {kind}: {results[-1].rate:.0f} tasks/s", file=sys.stderr)
    print(table(results))
    print(
        "statements per handler task (in process, BEGIN and COMMIT included): "
        + ", ".join(f"{kind} {n:.1f}" for kind, n in per_task.items())
    )
    print(f"load average (1 min): {before:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
