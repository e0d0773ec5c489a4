"""Lambda entrypoint: cold start and warm per-record overhead.

Cold start: a new interpreter that imports `s3tasks.lambda_handler`, configures Django and
handles a first SQS record (one no-op handler run inline, recorded on SQLite), against the
baseline measured in the same run: `python -c "import django; django.setup()"` with the same
settings. Runs alternate between the two so machine noise hits both; medians are compared.
Target: ≤ 1.15x.

Warm: inside one process, time per record through `handler()` with SQS batches of 10 records
(all distinct events, each running the no-op handler), against the same events sent straight
to `dispatch_event` (the run bookkeeping on the database, which every entrypoint pays), and
`handler()` once more with `dispatch_event` stubbed out: what the Lambda entrypoint and the
batch core add on top (SQS record unpacking, envelope parsing, routing, outcomes).
Target: ≤ 1 ms per record for that overhead.

    python benchmarks/lambda_overhead.py [--repetitions 9] [--records 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
BUCKET = "bench-uploads"
HANDLER = "lambda_tests.noop"  # tests/lambda_app/handlers.py: does nothing

BARE = "import django; django.setup()"
COLD = (
    "import json, sys; from s3tasks.lambda_handler import handler; "
    "r = handler(json.loads(sys.argv[1]), None); assert r == {'batchItemFailures': []}, r"
)
SETUP = f"""
import django; django.setup()
from s3tasks.models import Bucket, HandlerBinding, NotificationRule
bucket = Bucket.objects.create(name={BUCKET!r})
rule = NotificationRule.objects.create(bucket=bucket, events=["s3:ObjectCreated:*"])
HandlerBinding.objects.create(rule=rule, handler_name={HANDLER!r})
"""
WARM = """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
import django; django.setup()
from lambda_overhead import sqs_batch
from s3tasks.processing.dispatch import dispatch_event
from s3tasks.envelopes import parse_events
from s3tasks.lambda_handler import handler
from s3tasks.rules.routing import route

records, size = {records}, 10
handler(sqs_batch("warmup", 0, size), None)
began = time.perf_counter()
for start in range(0, records, size):
    assert handler(sqs_batch("warm", start, size), None) == {{"batchItemFailures": []}}
through_handler = (time.perf_counter() - began) / records
events = [e for start in range(0, records, size)
          for r in sqs_batch("direct", start, size)["Records"]
          for e in parse_events(r["body"])]
began = time.perf_counter()
for event in events:
    assert dispatch_event(event, routes=route(event), mode="inline").ok
direct = (time.perf_counter() - began) / records
import s3tasks.processing.dispatch
from s3tasks.processing.dispatch import DispatchOutcome
s3tasks.processing.dispatch.dispatch_event = lambda event, **kw: DispatchOutcome(None, (), ok=True)
began = time.perf_counter()
for start in range(0, records, size):
    assert handler(sqs_batch("stub", start, size), None) == {{"batchItemFailures": []}}
entry = (time.perf_counter() - began) / records
print(json.dumps({{"handler": through_handler, "dispatch": direct, "entry": entry}}))
"""


def s3_notification(key: str) -> str:
    """The body S3 puts in SQS for one created object."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T09:15:27.604Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"},
            "object": {"key": key, "size": 1024, "eTag": "d41d8cd9", "sequencer": key},
        },
    }
    return json.dumps({"Records": [record]})


def sqs_batch(label: str, start: int, size: int) -> dict:
    """A Lambda SQS event of `size` distinct S3 events."""
    return {
        "Records": [
            {
                "messageId": f"{label}-{i}",
                "receiptHandle": "x",
                "body": s3_notification(f"incoming/{label}-{i}.csv"),
                "attributes": {"ApproximateReceiveCount": "1"},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:s3tasks-events",
            }
            for i in range(start, start + size)
        ]
    }


def environment(database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3TASKS_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="lambda_settings",
        S3TASKS_DEV="1",  # the example project's throwaway SECRET_KEY
        S3TASKS_DB="sqlite",
        S3TASKS_SQLITE_PATH=str(database),
        S3TASKS_LOG="WARNING",
        PYTHONPATH=f"{ROOT}{os.pathsep}{TESTS}",
    )
    return env


def run(code: str, env: dict[str, str], *args: str) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of a fresh interpreter running `code`.

    CPU time is reported too because the machine is shared: other processes stretch the wall
    clock of both sides, but barely change the CPU work a cold start does.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, check=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure_cold(env: dict[str, str], repetitions: int) -> dict[str, float]:
    """Medians (seconds) of alternating bare and Lambda cold starts."""
    samples: dict[str, list[float]] = {"bare": [], "bare_cpu": [], "cold": [], "cold_cpu": []}
    for i in range(repetitions):
        for name, code, args in (
            ("bare", BARE, ()),
            ("cold", COLD, (json.dumps(sqs_batch(f"cold{i}", 0, 1)),)),
        ):
            wall, cpu = run(code, env, *args)
            samples[name].append(wall)
            samples[f"{name}_cpu"].append(cpu)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure_warm(env: dict[str, str], records: int) -> dict[str, float]:
    code = WARM.format(benchmarks=str(ROOT / "benchmarks"), records=records)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=9, help="cold starts of each kind")
    parser.add_argument("--records", type=int, default=1000, help="records in the warm run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = environment(Path(tmp) / "bench.sqlite3")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            env=env,
            cwd=ROOT,
            check=True,
        )
        run(SETUP, env)
        run(BARE, env)  # warm the OS file cache and .pyc files before measuring
        cold = measure_cold(env, args.repetitions)
        warm = measure_warm(env, args.records)
    report(args, cold, warm)


def report(args: argparse.Namespace, cold: dict[str, float], warm: dict[str, float]) -> None:
    print(f"Cold start, median of {args.repetitions} fresh interpreters each")
    print(f"  {'':<42} {'wall ms':>9} {'CPU ms':>9}")
    for label, key in (
        ("bare django.setup()", "bare"),
        ("lambda_handler: setup + first SQS record", "cold"),
    ):
        print(f"  {label:<42} {cold[key] * 1000:9.1f} {cold[key + '_cpu'] * 1000:9.1f}")
    wall_ratio, cpu_ratio = cold["cold"] / cold["bare"], cold["cold_cpu"] / cold["bare_cpu"]
    print(f"  {'ratio (target <= 1.15x)':<42} {wall_ratio:8.2f}x {cpu_ratio:8.2f}x")
    print(f"Warm, per record ({args.records} records, SQS batches of 10, SQLite)")
    for label, key in (
        ("handler(): parse + route + dispatch + run", "handler"),
        ("dispatch_event() alone (baseline)", "dispatch"),
        ("entrypoint overhead, dispatch stubbed", "entry"),
    ):
        print(f"  {label:<42} {warm[key] * 1000:9.3f} ms")
    print(f"  {'(target for the overhead: <= 1 ms)':<42}")


if __name__ == "__main__":
    main()
