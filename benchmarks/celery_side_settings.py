"""Settings of the Celery worker that `benchmarks/celery_side.py` starts: the example project,
with Celery's Django fixup told to keep database connections across tasks.

Celery closes every Django database connection before and after each task unless
`CELERY_DB_REUSE_MAX` is set; on PostgreSQL that is a new server process per task, several
milliseconds that a task touching the database pays and a no-op task does not (see
docs/dispatch.md, "Celery settings"). `BENCH_DB_REUSE_MAX=0` measures Celery's default.
"""

import os

from project.settings import *  # noqa: F403

CELERY_DB_REUSE_MAX = int(os.environ.get("BENCH_DB_REUSE_MAX", "1000")) or None
DEBUG = False
