"""What an operator sees: `manage.py sqs_worker` and the Lambda entrypoint as real processes in
a project without `LOGGING` (the example project with `S3TASKS_LOG=none`), against moto's
HTTP server. Start line, `-v`, JSON lines, SIGINT, and no second handler when the project
configured logging itself."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from s3tasks.logs import RUN_FIELDS
from s3tasks.models import HandlerRun
from tests.conftest import ROOT, subprocess_env
from tests.worker_app.handlers import COUNT
from tests.worker_support import HANDLERS_APP, bind, s3_body, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUEUE = "logs-tests"
BUCKET = "logs-tests-bucket"
QUICK = ["--queue", QUEUE, "--dispatch", "inline", "--wait-time", "1"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) s3tasks")


@pytest.fixture
def queue(moto_endpoint) -> str:
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    return sqs.create_queue(QueueName=QUEUE)["QueueUrl"]


def send_event(endpoint: str, url: str, key: str) -> None:
    bind(COUNT, BUCKET)
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    sqs.send_message(QueueUrl=url, MessageBody=s3_body(BUCKET, key))


def worker_env(endpoint: str, log: str = "none") -> dict[str, str]:
    """`S3TASKS_LOG=none`: the example project sets no LOGGING, as a fresh project."""
    return subprocess_env(
        S3TASKS_ENDPOINT_URL=endpoint, S3TASKS_LOG=log, S3TASKS_EXTRA_APPS=HANDLERS_APP
    )


def run_worker(env: dict[str, str], *args: str) -> tuple[str, str]:
    """`manage.py sqs_worker ARGS` until idle; its (stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "sqs_worker", *QUICK, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def log_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if LOG_LINE.match(line)]


def test_a_project_without_logging_sees_the_start_line_and_on_sigint_the_shutdown(
    moto_endpoint, queue, tmp_path: Path
):
    err_path = tmp_path / "stderr.log"
    with err_path.open("wb") as err:
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "sqs_worker", *QUICK, "--concurrency", "3"],
            cwd=ROOT,
            env=worker_env(moto_endpoint),
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:
            wait_until(lambda: "consuming" in err_path.read_text(), 60, "the start line")
            worker.send_signal(signal.SIGINT)
            stdout, _ = worker.communicate(timeout=60)
        finally:
            worker.kill()
    stderr = err_path.read_text()

    assert worker.returncode == 0, stderr[-3000:]
    lines = log_lines(stderr)
    (start,) = [line for line in lines if "consuming" in line]
    assert f" INFO s3tasks.worker: s3tasks worker: consuming {QUEUE} (dispatch inline, " in start
    assert "concurrency 3," in start
    assert "; hint: DATABASES['default']['CONN_MAX_AGE'] is 0" in start
    assert any("SIGINT received" in line for line in lines)
    begins = [i for i, line in enumerate(lines) if "shutting down: waiting up to" in line]
    ends = [i for i, line in enumerate(lines) if "s3tasks worker: stopped; received=0" in line]
    assert begins and ends and begins[0] < ends[0], stderr
    assert "sqs_worker: received 0" in stdout.decode()


@pytest.mark.parametrize(
    "verbosity, shown, hidden",
    [("0", set(), {"INFO", "DEBUG"}), ("2", {"DEBUG", "INFO"}, set())],
)
def test_verbosity_0_hides_info_and_verbosity_2_shows_debug(
    moto_endpoint, queue, verbosity, shown, hidden
):
    send_event(moto_endpoint, queue, f"verbosity-{verbosity}.txt")

    stdout, stderr = run_worker(worker_env(moto_endpoint), "-v", verbosity, "--exit-when-idle", "1")

    levels = {LOG_LINE.match(line).group(1) for line in log_lines(stderr)}
    assert shown <= levels and not hidden & levels, stderr[-3000:]
    # the warning that the queue has no dead-letter queue shows at every verbosity
    assert "WARNING" in levels
    assert "sqs_worker: received 1, handled 1" in stdout  # the command's own output stays
    if shown:
        assert any("tests.worker.count started on" in line for line in log_lines(stderr))


def test_log_format_json_lines_carry_the_handled_event_and_its_run(moto_endpoint, queue):
    send_event(moto_endpoint, queue, "json/report 1.csv")

    _, stderr = run_worker(
        worker_env(moto_endpoint), "--log-format", "json", "--exit-when-idle", "1"
    )

    assert not log_lines(stderr)  # no text lines
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert all({"timestamp", "level", "logger", "message"} <= set(e) for e in entries)
    (start,) = [e for e in entries if "consuming" in e["message"]]
    assert (start["queues"], start["dispatch"]) == ([QUEUE], "inline")
    (ran,) = [e for e in entries if e.get("run_id")]
    run = HandlerRun.objects.get()
    assert {name: ran[name] for name in RUN_FIELDS} == {
        "dedup_key": run.event.dedup_key,
        "bucket": BUCKET,
        "key": "json/report 1.csv",
        "handler": COUNT,
        "run_id": run.pk,
        "attempt": 1,
        "duration_ms": run.duration_ms,
        "outcome": "succeeded",
    }
    (stopped,) = [e for e in entries if e["message"].startswith("s3tasks worker: stopped")]
    assert stopped["counts"]["handled"] == 1


def test_a_project_that_configured_logging_gets_no_second_handler(moto_endpoint, queue):
    _, stderr = run_worker(
        worker_env(moto_endpoint, log="INFO"), "--log-format", "json", "--exit-when-idle", "1"
    )

    # The project's LOGGING handler writes each line once, in its own (text) format.
    starts = [line for line in stderr.splitlines() if "s3tasks worker: consuming" in line]
    assert len(starts) == 1 and LOG_LINE.match(starts[0]), stderr[-3000:]


# --- the Lambda entrypoint ---------------------------------------------------------------------

LAMBDA_SCRIPT = """
import json, sys
from s3tasks.lambda_handler import handler
handler(json.loads(sys.stdin.read()), None)
"""


def s3_notification(key: str) -> dict:
    return json.loads(s3_body(BUCKET, key))


def test_the_lambda_entrypoint_logs_to_stderr_when_nothing_configured_logging():
    bind(COUNT, BUCKET)
    env = subprocess_env(S3TASKS_LOG="none", S3TASKS_EXTRA_APPS=HANDLERS_APP)

    done = subprocess.run(
        [sys.executable, "-c", LAMBDA_SCRIPT],
        input=json.dumps(s3_notification("lambda.txt")),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert done.returncode == 0, done.stderr
    (line,) = [line for line in log_lines(done.stderr) if "succeeded on" in line]
    assert f"INFO s3tasks.processing.execution: s3tasks: {COUNT} succeeded on s3://" in line


def test_under_the_lambda_runtime_its_own_handler_writes_each_line_once(tmp_path: Path):
    from tests.lambda_runtime import FakeRuntimeAPI

    bind(COUNT, BUCKET)
    api = FakeRuntimeAPI()
    log_path = tmp_path / "awslambdaric.log"
    env = subprocess_env(
        S3TASKS_LOG="none",
        S3TASKS_EXTRA_APPS=HANDLERS_APP,
        AWS_LAMBDA_RUNTIME_API=api.address,
        AWS_LAMBDA_LOG_LEVEL="INFO",  # Lambda's advanced logging controls
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", "s3tasks.lambda_handler.handler"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            answer = api.invoke(s3_notification("runtime.txt"))
        finally:
            process.kill()
            process.wait(10)
            api.close()
    output = log_path.read_text()

    assert answer.ok, (answer.body, output[-3000:])
    ran = [line for line in output.splitlines() if "succeeded on" in line]
    assert len(ran) == 1 and ran[0].startswith("[INFO]"), output[-3000:]  # Lambda's format
