"""Settings for Lambda test subprocesses: the example project plus the test handlers' app."""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "lambda_app"]
