"""Settings of the example project. Every knob reads an environment variable so the same
project serves the local demo (SQLite, eager Celery, moto) and the integration tests
(PostgreSQL, a real Celery worker on Redis, moto's HTTP server).

Safe by default: without a development mode this is a deployment, so DEBUG is off and
DJANGO_SECRET_KEY must be set. `S3TASKS_DEV=1` (the test suite, local experiments) and
`S3TASKS_DEMO=1` (set by `manage.py s3tasks_demo` for itself and its children) switch to a
throwaway key with DEBUG on; only the demo mounts the demo pages (`/demo/`).
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

DEMO_MODE = os.environ.get("S3TASKS_DEMO") == "1"
DEV_MODE = DEMO_MODE or os.environ.get("S3TASKS_DEV") == "1"


def _secret_key() -> str:
    """The deployment's key; a fixed, public one only in a development mode."""
    key = os.environ.get("DJANGO_SECRET_KEY", "")
    if key:
        return key
    if DEV_MODE:
        return "s3tasks-example-not-secret"  # public: anything signed with it is forgeable
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set. Set it to a long random value in production, e.g. "
        "the output of: python -c 'from django.core.management.utils import "
        "get_random_secret_key as k; print(k())'. To run the example project locally "
        "(throwaway key, DEBUG on), set S3TASKS_DEV=1 instead."
    )


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "1" if DEV_MODE else "0") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver", "[::1]"]
# A deployment names its own hosts, comma-separated: DJANGO_ALLOWED_HOSTS=app.example.com
ALLOWED_HOSTS += [
    h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "s3tasks",
    "project.demo",
]
# Extra apps/modules from the environment (comma-separated dotted paths), e.g. the handler
# modules that tests load into `manage.py sqs_worker` subprocesses.
INSTALLED_APPS += [a for a in os.environ.get("S3TASKS_EXTRA_APPS", "").split(",") if a.strip()]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# The demo pages exist only while the demo runs (see project/demo/site_urls.py).
ROOT_URLCONF = "project.demo.site_urls" if DEMO_MODE else "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

WSGI_APPLICATION = "project.wsgi.application"

if os.environ.get("S3TASKS_DB", "sqlite") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            # Long-running processes (sqs_worker) keep connections this long; 0 = per request.
            "CONN_MAX_AGE": int(os.environ.get("S3TASKS_CONN_MAX_AGE", "0")),
            "NAME": os.environ.get("PGDATABASE", "test"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "TEST": {"NAME": os.environ.get("S3TASKS_PG_TEST_NAME", "test_s3tasks")},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "CONN_MAX_AGE": int(os.environ.get("S3TASKS_CONN_MAX_AGE", "0")),
            "NAME": os.environ.get("S3TASKS_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            # WAL lets the worker, the admin and tests read while one writes; IMMEDIATE takes
            # the write lock at BEGIN so concurrent writers queue instead of deadlocking.
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
            },
            # A file (not :memory:) so worker subprocesses in tests see the test database.
            "TEST": {
                "NAME": os.environ.get(
                    "S3TASKS_SQLITE_TEST_PATH", str(BASE_DIR / ".pytest-db.sqlite3")
                )
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"

_endpoint = os.environ.get("S3TASKS_ENDPOINT_URL") or None
if _endpoint:
    # A local emulator accepts any credentials; never set these against real AWS.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

S3TASKS = {
    "REGION": os.environ.get("S3TASKS_REGION", "us-east-1"),
    "ENDPOINT_URL": _endpoint,
    "DEFAULT_QUEUE": os.environ.get("S3TASKS_DEFAULT_QUEUE", "s3tasks-events"),
    "DISPATCH": os.environ.get("S3TASKS_DISPATCH", "celery"),
    "RULES_CHECK_INTERVAL": float(os.environ.get("S3TASKS_RULES_CHECK_INTERVAL", "1.0")),
}

# Celery: eager (in-process) unless a broker is given, e.g. CELERY_BROKER_URL=redis://127.0.0.1:6379/0
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "memory://")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = "CELERY_BROKER_URL" not in os.environ
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_SERIALIZER = "json"
# Keep database connections across tasks (Celery closes them around every task otherwise).
CELERY_DB_REUSE_MAX = 1000
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# django-storages, pointed at the same endpoint (used by S3Event.open()).
AWS_S3_ENDPOINT_URL = _endpoint
AWS_S3_REGION_NAME = S3TASKS["REGION"]
AWS_S3_SIGNATURE_VERSION = "s3v4"
AWS_S3_ADDRESSING_STYLE = "path"

# S3TASKS_LOG=DEBUG|INFO|WARNING… sets the level; S3TASKS_LOG=none leaves LOGGING unset, as in a
# fresh project: s3tasks' commands then log to stderr by themselves (docs/worker.md, "Logs").
_log_level = os.environ.get("S3TASKS_LOG", "INFO")
if _log_level.lower() != "none":
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {"s3tasks": {"handlers": ["console"], "level": _log_level}},
    }
