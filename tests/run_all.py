"""Run the whole test suite: everything on SQLite, then on PostgreSQL the tests that need it
(`postgres`: concurrency and idempotency races) and every integration test (real worker, Celery
and Lambda processes against moto's server), so the guarantees are checked on both databases.

Usage: python tests/run_all.py [extra pytest args]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(label: str, env: dict[str, str], args: list[str]) -> int:
    print(f"\n=== {label}: pytest {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env)
    # Exit code 5 = nothing collected for that selection; not a failure of the suite.
    return 0 if result.returncode == 5 else result.returncode


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    extra = sys.argv[1:]
    base = {**os.environ}
    # S3TASKS_TEST_PASSES=sqlite runs the first pass only; =unit runs only the tests that start
    # no processes (no `integration` mark), on SQLite: CI's second Django line, for time.
    passes = set(os.environ.get("S3TASKS_TEST_PASSES", "sqlite,postgres").split(","))
    if passes == {"unit"}:
        unit = ["-m", "not postgres and not integration", *extra]
        return run("SQLite, unit tests", {**base, "S3TASKS_DB": "sqlite"}, unit)
    sqlite = run("SQLite", {**base, "S3TASKS_DB": "sqlite"}, ["-m", "not postgres", *extra])
    if "postgres" not in passes:
        return sqlite
    if not postgres_reachable():
        print("\n=== PostgreSQL: not reachable on 127.0.0.1:5432; its tests are skipped")
        return sqlite or (1 if os.environ.get("S3TASKS_REQUIRE_SERVICES") == "1" else 0)
    postgres = run(
        "PostgreSQL",
        {**base, "S3TASKS_DB": "postgres"},
        ["-m", "postgres or (integration and not browser)", *extra],
    )
    return sqlite or postgres


if __name__ == "__main__":
    sys.exit(main())
