"""The inner half of `manage.py s3tasks_demo`: set up, start the worker, upload, watch.

Runs in a process whose settings already point at the emulator and the demo database (see
`launcher`). Everything here is what a user would do by hand, in order, with readable output.
"""

from __future__ import annotations

import io
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management import call_command

from project.demo import report
from project.demo.handlers import DEMO_BUCKET
from project.demo.launcher import INTERRUPTED, manage_command
from project.demo.processes import stop
from project.demo.setup import configure_demo_buckets
from project.demo.tasks import REPORTS_BUCKET, report_key

SAMPLES = Path(__file__).resolve().parent / "samples"
REMOVED_SAMPLE = "orders march (draft).csv"
DEMO_USER = ("demo", "demo")


@dataclass
class Expectation:
    """What a complete loop looks like: which runs must succeed, which reports must exist."""

    imported: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)

    def reports_wanted(self) -> set[str]:
        return {report_key(k) for k in self.imported - self.removed}

    def reports_gone(self) -> set[str]:
        return {report_key(k) for k in self.removed}


def prepare_database() -> None:
    """Migrate the (fresh, see `launcher.reset_database`) demo database."""
    call_command("migrate", verbosity=0, interactive=False)


def create_demo_superuser() -> None:
    from django.contrib.auth import get_user_model

    username, password = DEMO_USER
    user_model = get_user_model()
    if not user_model.objects.filter(username=username).exists():
        user_model.objects.create_superuser(username, f"{username}@example.com", password)


def sync_configuration() -> list[str]:
    """`manage.py sync_notifications` (plan and apply); returns its output lines."""
    out = io.StringIO()
    call_command("sync_notifications", stdout=out, stderr=out)
    return [line for line in out.getvalue().splitlines() if line.strip()]


def start_worker(log_path: Path) -> subprocess.Popen:
    """The real worker, in its own process, as a user would run it next to the web app."""
    log = open(log_path, "wb")  # noqa: SIM115 (kept open for the worker's lifetime)
    return subprocess.Popen(
        manage_command("sqs_worker", "--dispatch", "inline", "--wait-time", "1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def upload_samples(s3, expectation: Expectation) -> list[str]:
    keys = []
    for path in sorted(SAMPLES.glob("*.csv")):
        key = f"incoming/{path.name}"
        s3.put_object(Bucket=DEMO_BUCKET, Key=key, Body=path.read_bytes(), ContentType="text/csv")
        expectation.imported.add(key)
        keys.append(key)
    return keys


def reports_present(s3) -> set[str]:
    listing = s3.list_objects_v2(Bucket=REPORTS_BUCKET, Prefix="summaries/")
    return {item["Key"] for item in listing.get("Contents", [])}


def run_loop(*, once: bool, timeout: float, web_port: int, data_dir: Path) -> int:
    """The whole demo; returns the process exit code."""
    from s3tasks.aws import client

    console = report.console()
    started = time.monotonic()
    endpoint = settings.S3TASKS["ENDPOINT_URL"]
    report.banner(console, endpoint, settings.DATABASES["default"]["NAME"])
    with console.status("Migrating the demo database…"):
        prepare_database()
        configure_demo_buckets([f"http://127.0.0.1:{web_port}", f"http://localhost:{web_port}"])
        create_demo_superuser()
    report.step(console, "Database migrated; demo rules come from @on_s3_event in handlers.py")
    with console.status("Syncing buckets, queue and notifications to the emulator…"):
        report.sync_output(console, sync_configuration())
    worker = None
    try:
        worker = start_worker(data_dir / "worker.log")
        report.step(console, f"Worker started (pid {worker.pid}, log {data_dir / 'worker.log'})")
        s3 = client("s3")
        expectation = Expectation()
        watcher = report.Watcher(console)
        for key in upload_samples(s3, expectation):
            report.upload(console, DEMO_BUCKET, key)
        ok = watch_until_complete(s3, watcher, expectation, started + timeout)
        report.summary(console, time.monotonic() - started)
        if not ok:
            report.failure(console, missing_pieces(s3, watcher, expectation), data_dir)
            return 1
        if once:
            report.step(console, "Loop complete: exiting (--once).")
            return 0
        return keep_running(watcher, worker, web_port, data_dir)
    finally:
        if worker is not None:
            stop(worker)


def watch_until_complete(s3, watcher, expectation: Expectation, deadline: float) -> bool:
    """Print progress as it happens; remove the draft once its import is done."""
    removed_key = f"incoming/{REMOVED_SAMPLE}"
    while time.monotonic() < deadline:
        watcher.poll()
        present = reports_present(s3)
        watcher.reports(present)
        if removed_key not in expectation.removed and report_key(removed_key) in present:
            s3.delete_object(Bucket=DEMO_BUCKET, Key=removed_key)
            expectation.removed.add(removed_key)
            report.removal(watcher.console, DEMO_BUCKET, removed_key)
        if expectation.removed and is_complete(watcher, expectation, present):
            watcher.poll()
            return True
        time.sleep(0.25)
    return False


def is_complete(watcher, expectation: Expectation, present: set[str]) -> bool:
    imported = watcher.succeeded("import_csv")
    forgotten = watcher.succeeded("forget_csv")
    return (
        expectation.imported <= imported
        and expectation.removed <= forgotten
        and expectation.reports_wanted() <= present
        and not expectation.reports_gone() & present
    )


def missing_pieces(s3, watcher, expectation: Expectation) -> list[str]:
    present = reports_present(s3)
    missing = [
        f"import of {k}" for k in sorted(expectation.imported - watcher.succeeded("import_csv"))
    ]
    missing += [
        f"removal of {k}" for k in sorted(expectation.removed - watcher.succeeded("forget_csv"))
    ]
    missing += [f"report {k}" for k in sorted(expectation.reports_wanted() - present)]
    missing += [f"deletion of report {k}" for k in sorted(expectation.reports_gone() & present)]
    if not expectation.removed:
        missing.append(f"removal of incoming/{REMOVED_SAMPLE} (its import never finished)")
    return missing


def keep_running(watcher, worker: subprocess.Popen, web_port: int, data_dir: Path) -> int:
    """Serve the admin and the upload page until stopped; keep printing new runs."""
    web_log = data_dir / "runserver.log"
    web = None
    try:
        web = subprocess.Popen(
            manage_command("runserver", f"127.0.0.1:{web_port}", "--noreload"),
            stdout=open(web_log, "wb"),  # noqa: SIM115 (closed with the process)
            stderr=subprocess.STDOUT,
        )
        endpoint = settings.S3TASKS["ENDPOINT_URL"]
        report.keep_running(watcher.console, web_port, DEMO_USER, endpoint)
        while worker.poll() is None and web.poll() is None:
            watcher.poll()
            time.sleep(0.5)
    except KeyboardInterrupt:
        return INTERRUPTED  # Ctrl-C or the launcher's SIGTERM: a normal way to stop
    finally:
        if web is not None:
            stop(web)
    which = "runserver" if web.returncode is not None else "the worker"
    watcher.console.print(
        f"[bold red]{which} exited unexpectedly[/] (is port {web_port} free? see {web_log} "
        f"and {data_dir / 'worker.log'})."
    )
    return 1
