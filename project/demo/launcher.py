"""The outer half of `manage.py s3tasks_demo`: start moto's server, then run the demo itself
in a child process whose environment points everything at it.

Django, boto3 and django-storages read the endpoint and database from settings at startup, so
rather than patching settings in a running process, the demo runs in a fresh process that was
started with the right environment. The emulator is owned (and stopped) here, and so is the
demo's process group: on SIGTERM, SIGINT or SIGHUP every process the demo started is ended
(see `processes`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from project.demo.processes import SignalLatch, end_process_group
from s3tasks.emulator import LocalEmulator

INNER_FLAG = "S3TASKS_DEMO_INNER"
DEMO_MODE_FLAG = "S3TASKS_DEMO"  # project/settings.py: demo pages, throwaway key, DEBUG on
DATABASE_FILE = "demo.sqlite3"
INTERRUPTED = 130


def demo_environment(endpoint: str, data_dir: Path) -> dict[str, str]:
    """Everything the demo's processes need to share one emulator and one SQLite file."""
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}  # Celery eager
    project_root = str(Path(__file__).resolve().parents[2])
    env.update(
        {
            INNER_FLAG: "1",
            DEMO_MODE_FLAG: "1",
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "project.settings"),
            "S3TASKS_ENDPOINT_URL": endpoint,
            "S3TASKS_DB": "sqlite",
            "S3TASKS_SQLITE_PATH": str(data_dir / DATABASE_FILE),
            "S3TASKS_DISPATCH": "inline",
            "S3TASKS_RULES_CHECK_INTERVAL": "0.5",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": os.environ.get("S3TASKS_REGION", "us-east-1"),
            "PYTHONPATH": project_root + os.pathsep + env.get("PYTHONPATH", ""),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def reset_database(database: Path) -> None:
    """A fresh SQLite file for a fresh emulator: the two must agree on what exists."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


def manage_command(*args: str) -> list[str]:
    """`python -m django <args>`: works wherever the settings module is importable."""
    return [sys.executable, "-m", "django", *args]


def supervise(child: subprocess.Popen, latch: SignalLatch) -> int:
    """Wait for the demo to finish; on a shutdown signal end its whole process group."""
    try:
        while child.poll() is None:
            if latch.triggered:
                end_process_group(child, hurry=lambda: latch.hurry)
                return 0 if child.returncode == 0 else INTERRUPTED
            time.sleep(0.1)
        return child.returncode
    finally:
        # Also after a normal exit: nothing the demo started may be left behind.
        end_process_group(child, hurry=lambda: latch.hurry)


def launch(argv: list[str], *, port: int, data_dir: Path) -> int:
    """Run the demo (`argv` are the command's own arguments) next to a fresh emulator."""
    data_dir.mkdir(parents=True, exist_ok=True)
    reset_database(data_dir / DATABASE_FILE)
    emulator = LocalEmulator(port or None, data_dir / "moto.log")
    with SignalLatch() as latch:
        try:
            emulator.start()
            if latch.triggered:
                return INTERRUPTED
            env = demo_environment(emulator.url, data_dir)
            # Its own session and process group, which its worker and runserver join: a
            # terminal's Ctrl-C reaches only this process, which ends the group in order.
            child = subprocess.Popen(
                manage_command("s3tasks_demo", *argv), env=env, start_new_session=True
            )
            return supervise(child, latch)
        finally:
            emulator.stop()
