"""The README's first command, run as a user would: `manage.py s3tasks_demo --once`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.demo_support import demo_env

pytestmark = pytest.mark.integration


def run_demo(tmp_path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "manage.py",
            "s3tasks_demo",
            "--once",
            "--data-dir",
            str(tmp_path),
            *extra,
        ],
        cwd=ROOT,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_once_runs_the_whole_loop_and_exits_zero(tmp_path):
    result = run_demo(tmp_path)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "Applied" in out  # sync_notifications ran against the emulator
    assert "⇧ uploaded s3://s3tasks-demo-uploads/incoming/orders-january.csv" in out
    assert "✔ import_csv ObjectCreated:Put incoming/orders-january.csv" in out
    assert "✔ forget_csv ObjectRemoved:Delete incoming/orders march (draft).csv" in out
    assert "↪ follow-up project.demo.tasks.write_import_summary" in out
    assert "📄 report s3://s3tasks-demo-reports/summaries/orders-january.csv.json" in out
    assert "Summary: 4 handler run(s) succeeded, 0 failed, 4 follow-up command(s) sent" in out
    assert "Loop complete" in out
    assert (tmp_path / "demo.sqlite3").exists() and (tmp_path / "worker.log").exists()


def test_demo_once_exits_non_zero_and_says_what_is_missing_when_it_times_out(tmp_path):
    result = run_demo(tmp_path, "--timeout", "0.1")
    assert result.returncode != 0
    assert "The loop did not complete in time." in result.stdout
    assert "import of incoming/orders-january.csv" in result.stdout
    assert "The demo did not complete" in result.stderr
