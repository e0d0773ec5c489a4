"""Settings of the test suite: the example project in development mode.

`S3TASKS_DEV=1` gives a throwaway SECRET_KEY (the project's production default requires
DJANGO_SECRET_KEY). It is set in the environment, not only here, so that every `manage.py`
subprocess a test starts (workers, Celery, Lambda runtimes) inherits it.
"""

import os

os.environ.setdefault("S3TASKS_DEV", "1")

from project.settings import *  # noqa: E402, F403
