"""Chaos at scale: real `sqs_worker` processes drain S3 events from moto's server on PostgreSQL
while workers are killed with SIGKILL (and, optionally, the database is stopped mid-drain).

Each event's handler inserts a row with no unique constraint and publishes a follow-up to a
second queue (tests/chaos_app/handlers.py). Printed: lost events, duplicate side effects,
follow-ups sent and duplicated (same idempotency key received twice: the relay's window
between the SQS send and marking the entry sent), what ended in the DLQ, elapsed time and the
load average (a loaded machine makes the timings a note, not a result).

    python benchmarks/chaos.py [--messages 2000] [--per-message 1] [--workers 3] [--kills 20]
        [--outage-seconds 0] [--concurrency 4] [--handler-ms 0] [--json]

Needs PostgreSQL on 127.0.0.1:5432 (a database `bench_s3tasks_chaos` is created and dropped);
with --outage-seconds, a cluster of its own on a free port from 5440 (Debian's
`pg_createcluster`, run as root or postgres), dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from s3tasks.emulator import LocalEmulator  # noqa: E402
from tests.chaos_app.cluster import PgCluster, drop_database, recreate_database  # noqa: E402
from tests.chaos_app.harness import make_queues, manage  # noqa: E402
from tests.chaos_app.run import ChaosResult, ChaosRun, Outage, run_chaos  # noqa: E402

BENCH_DB = "bench_s3tasks_chaos"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="SQS messages to drain.")
    parser.add_argument("--per-message", type=int, default=1, help="S3 records per message.")
    parser.add_argument("--workers", type=int, default=3, help="sqs_worker processes.")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs spread over the drain.")
    parser.add_argument(
        "--outage-seconds", type=float, default=0, help="Stop the database this long (0: no)."
    )
    parser.add_argument("--concurrency", type=int, default=4, help="Threads per worker.")
    parser.add_argument("--visibility-timeout", type=int, default=3)
    parser.add_argument("--max-receive-count", type=int, default=5, help="Receives before DLQ.")
    parser.add_argument("--max-backoff", type=int, default=None, help="Worker --max-backoff.")
    parser.add_argument("--handler-ms", type=float, default=0, help="Pause inside the handler.")
    parser.add_argument("--timeout", type=float, default=900, help="Give up after (seconds).")
    parser.add_argument("--json", action="store_true", help="Also print the result as JSON.")
    return parser.parse_args()


@contextmanager
def database(outage: bool) -> Iterator[tuple[dict[str, str], PgCluster | None]]:
    """A fresh, migrated database: on a cluster of our own when it is to be stopped."""
    if outage:
        with PgCluster.create("s3bench") as cluster:
            cluster.create_database("chaos")
            env = cluster.env("chaos")
            yield env, cluster
        return
    env = recreate_database(BENCH_DB)
    try:
        yield env, None
    finally:
        drop_database(BENCH_DB)


def worker_args(args: argparse.Namespace) -> tuple[str, ...]:
    chosen = [
        *("--dispatch", "inline", "--wait-time", "1", "--stats-interval", "5"),
        *("--concurrency", str(args.concurrency)),
        *("--visibility-timeout", str(args.visibility_timeout)),
    ]
    if args.max_backoff is not None:
        chosen += ["--max-backoff", str(args.max_backoff)]
    return tuple(chosen)


def table(result: ChaosResult, args: argparse.Namespace) -> str:
    rows = [
        ("messages", result.messages),
        ("events", result.events),
        ("workers x threads", f"{args.workers} x {args.concurrency}"),
        ("kills (SIGKILL)", result.kills),
        ("database outage", f"{args.outage_seconds:g} s" if args.outage_seconds else "none"),
        ("lost events", result.lost),
        ("duplicate side effects", result.duplicate_side_effects),
        ("follow-ups sent", f"{result.followups_sent} / {result.events}"),
        ("follow-ups duplicated", result.followups_duplicated),
        ("  per kill", f"{result.duplicates_per_kill:.2f}"),
        ("SQS accepted -> marked sent", "{} ms median, {} ms p90".format(*result.mark_lag_ms)),
        ("events with two follow-ups", result.events_with_two_followups),
        ("outbox left unsent", result.outbox_unsent),
        ("in the DLQ", result.dlq),
        ("drained", "yes" if result.drained else "NO (timed out)"),
        ("elapsed", f"{result.elapsed:.1f} s"),
        ("load average (1/5/15 min)", " / ".join(f"{x:.2f}" for x in result.load)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> int:
    args = arguments()
    print(f"load average before: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    logs = Path(tempfile.mkdtemp(prefix="s3tasks-chaos-"))
    with (
        LocalEmulator(log_path=logs / "moto.log") as aws,
        database(args.outage_seconds > 0) as (
            db_env,
            cluster,
        ),
    ):
        env = {
            **os.environ,
            **db_env,
            "S3TASKS_DEV": "1",  # the example project's throwaway key
            "DJANGO_DEBUG": "0",  # no query log growing in long-running workers
            "S3TASKS_ENDPOINT_URL": aws.url,
            "S3TASKS_DISPATCH": "inline",
            "S3TASKS_CONN_MAX_AGE": "60",
            "S3TASKS_LOG": "INFO",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "CHAOS_HANDLER_MS": str(args.handler_ms),
        }
        manage(env, "migrate", "--verbosity", "0", timeout=300)
        sqs = boto3.client(
            "sqs",
            endpoint_url=aws.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        queues = make_queues(sqs, "chaos-bench", max_receive_count=args.max_receive_count)
        outage = None
        if cluster is not None:
            outage = Outage(args.outage_seconds, cluster.stop, cluster.start)
        plan = ChaosRun(
            events=args.messages * args.per_message,
            per_message=args.per_message,
            workers=args.workers,
            worker_args=worker_args(args),
            kills=args.kills,
            outage=outage,
            timeout=args.timeout,
        )
        result, _, schedule = run_chaos(sqs, env, queues, plan, logs)
    print(table(result, args))
    print(f"worker logs: {logs}")
    if args.json:
        print(json.dumps({**asdict(result), "schedule": schedule.log}, default=str))
    return 0 if result.drained else 1


if __name__ == "__main__":
    sys.exit(main())
