"""Settings for the Celery worker of the recovery tests: the dispatch tests' settings, with a
database that gives up on a held lock after one second, so a test holding a lock makes the
worker's claim fail with a real `OperationalError`."""

from tests.dispatch_worker_settings import *  # noqa: F403
from tests.dispatch_worker_settings import DATABASES

_default = DATABASES["default"]
if _default["ENGINE"].endswith("sqlite3"):
    _default["OPTIONS"] = {**_default.get("OPTIONS", {}), "timeout": 1}
else:
    _default["OPTIONS"] = {**_default.get("OPTIONS", {}), "options": "-c lock_timeout=1000"}
