"""The one typed settings object: reads `settings.S3TASKS` with documented defaults."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

from s3tasks.exceptions import S3TasksConfigurationError

DISPATCH_MODES = ("celery", "inline")
BATCH_RESULT_CODES = ("Succeeded", "TemporaryFailure", "PermanentFailure")
EVENTBRIDGE_KEY_FORMS = ("verbatim", "url-encoded")
LOG_FORMATS = ("text", "json")
# CloudWatch's rule for a namespace (Embedded Metric Format specification)
NAMESPACE_PATTERN = re.compile(r"[a-zA-Z0-9._#:/-]{1,255}")


@dataclass(frozen=True)
class WorkerSettings:
    """Defaults for `manage.py sqs_worker` (every one can be overridden by a flag)."""

    CONCURRENCY: int = 4
    BATCH_SIZE: int = 10
    WAIT_TIME: int = 20
    VISIBILITY_TIMEOUT: int = 60
    SHUTDOWN_TIMEOUT: int = 30
    STATS_INTERVAL: float = 60.0
    HEARTBEAT_FILE: str = ""
    MAX_BACKOFF: int = 900


@dataclass(frozen=True)
class S3TasksSettings:
    """Everything configurable in `S3TASKS = {...}`; see docs/configuration.md."""

    REGION: str = "us-east-1"
    ENDPOINT_URL: str | None = None
    DEFAULT_QUEUE: str = "s3tasks-events"
    DISPATCH: str = "celery"
    LAMBDA_DISPATCH: str = "inline"
    # Stop starting SQS records when less than this is left of the Lambda invocation.
    LAMBDA_TIME_MARGIN_MS: int = 2000
    # How EventBridge events write object keys; see docs/configuration.md for the evidence.
    EVENTBRIDGE_KEYS: str = "verbatim"
    BATCH_HANDLER: str | None = None
    BATCH_TREAT_MISSING_KEYS_AS: str = "PermanentFailure"
    CELERY_QUEUE: str | None = None
    MAX_RETRIES: int = 3
    RETRY_BACKOFF: int = 5
    # A run handed to Celery and not finished this many seconds later is driven again.
    RUN_LEASE: int = 900
    # How often each sqs_worker looks for runs past their lease (0 turns the timer off).
    RECOVERY_INTERVAL: float = 60.0
    RULES_CHECK_INTERVAL: float = 1.0
    # History (events, ended runs, message failures, sent follow-ups) older than this is
    # deleted by `s3tasks_cleanup` and the cleanup timer; None keeps it forever.
    HISTORY_RETENTION: timedelta | None = timedelta(days=30)
    # How often each sqs_worker runs one bounded cleanup pass (0, the default: never).
    CLEANUP_INTERVAL: float = 0.0
    # How commands and the Lambda entrypoint write their log lines when LOGGING sets none.
    LOG_FORMAT: str = "text"
    # The CloudWatch namespace of the Lambda entrypoint's EMF metric lines; None: no lines.
    METRICS_NAMESPACE: str | None = "s3tasks"
    # The SNS HTTPS endpoint (docs/sns-endpoint.md): topics it accepts besides Topic rows,
    # extra hosts for SigningCertURL/SubscribeURL (tests), the CA bundle of those fetches
    # (None: the system store), the oldest Timestamp accepted, the fetch timeout (seconds),
    # and the SignatureVersion values accepted.
    SNS_TOPIC_ARNS: tuple[str, ...] = ()
    SNS_CERT_HOSTS: tuple[str, ...] = ()
    SNS_CA_BUNDLE: str | None = None
    SNS_MAX_MESSAGE_AGE: timedelta = timedelta(hours=1)
    SNS_FETCH_TIMEOUT: float = 5.0
    SNS_SIGNATURE_VERSIONS: tuple[str, ...] = ("1", "2")
    STORAGE_OPTIONS: dict[str, Any] = field(default_factory=dict)
    WORKER: WorkerSettings = field(default_factory=WorkerSettings)

    def client_kwargs(self) -> dict[str, Any]:
        """Arguments for `boto3.client(...)`: region, and endpoint only when set."""
        kwargs: dict[str, Any] = {"region_name": self.REGION}
        if self.ENDPOINT_URL:
            kwargs["endpoint_url"] = self.ENDPOINT_URL
        return kwargs


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise S3TasksConfigurationError(
            f'S3TASKS["{name}"] is {value!r}; set it to one of {", ".join(map(repr, allowed))}.'
        )


def _typed(name: str, value: Any, kind: type | tuple[type, ...], example: str) -> None:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise S3TasksConfigurationError(
            f'S3TASKS["{name}"] is {value!r}; it must be like {example}.'
        )


def _check_metrics_namespace(value: Any) -> None:
    if value is None:
        return
    valid = isinstance(value, str) and NAMESPACE_PATTERN.fullmatch(value)
    if not valid or value.startswith("AWS/"):
        raise S3TasksConfigurationError(
            f'S3TASKS["METRICS_NAMESPACE"] is {value!r}; it must be a CloudWatch namespace of 1 '
            "to 255 letters, digits and . _ - # : / not starting with AWS/, e.g. "
            '"s3tasks" or "myapp/s3tasks", or None to emit no metrics from Lambda.'
        )


def _check_retention(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise S3TasksConfigurationError(
            f'S3TASKS["HISTORY_RETENTION"] is {value!r}; it must be a positive '
            "datetime.timedelta such as timedelta(days=30), or None to keep history forever."
        )


_SNS_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}")
_HOST_AND_PORT = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?")


def _string_list(name: str, value: Any, pattern: re.Pattern[str], example: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise S3TasksConfigurationError(
            f'S3TASKS["{name}"] is {value!r}; it must be a list such as {example}.'
        )
    for item in value:
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise S3TasksConfigurationError(
                f'S3TASKS["{name}"] holds {item!r}; write entries like those of {example}.'
            )
    return tuple(value)


def _check_sns(conf: S3TasksSettings) -> S3TasksSettings:
    """Validate the SNS endpoint's settings; lists become tuples (the settings are frozen)."""
    arns = _string_list(
        "SNS_TOPIC_ARNS",
        conf.SNS_TOPIC_ARNS,
        _SNS_TOPIC_ARN,
        '["arn:aws:sns:eu-west-1:123456789012:uploads"]',
    )
    hosts = _string_list(
        "SNS_CERT_HOSTS", conf.SNS_CERT_HOSTS, _HOST_AND_PORT, '["127.0.0.1:8443"]'
    )
    if conf.SNS_CA_BUNDLE is not None:
        _typed("SNS_CA_BUNDLE", conf.SNS_CA_BUNDLE, str, '"/etc/ssl/certs/ca-certificates.crt"')
        if not os.path.isfile(conf.SNS_CA_BUNDLE):
            raise S3TasksConfigurationError(
                f'S3TASKS["SNS_CA_BUNDLE"] is {conf.SNS_CA_BUNDLE!r}, which is not a file; '
                "name a PEM file of CA certificates, or leave it unset to use the system store."
            )
    age = conf.SNS_MAX_MESSAGE_AGE
    if not isinstance(age, timedelta) or age <= timedelta(0):
        raise S3TasksConfigurationError(
            f'S3TASKS["SNS_MAX_MESSAGE_AGE"] is {age!r}; it must be a positive '
            "datetime.timedelta such as timedelta(hours=1)."
        )
    _typed("SNS_FETCH_TIMEOUT", conf.SNS_FETCH_TIMEOUT, (int, float), "5.0")
    if conf.SNS_FETCH_TIMEOUT <= 0:
        raise S3TasksConfigurationError('S3TASKS["SNS_FETCH_TIMEOUT"] must be above 0 seconds.')
    versions = conf.SNS_SIGNATURE_VERSIONS
    if (
        isinstance(versions, str)
        or not isinstance(versions, list | tuple)
        or not versions
        or not set(versions) <= {"1", "2"}
    ):
        raise S3TasksConfigurationError(
            f'S3TASKS["SNS_SIGNATURE_VERSIONS"] is {versions!r}; set ["1", "2"] (both), or '
            '["2"] to accept only SHA256 signatures.'
        )
    return replace(
        conf, SNS_TOPIC_ARNS=arns, SNS_CERT_HOSTS=hosts, SNS_SIGNATURE_VERSIONS=tuple(versions)
    )


def _build_worker(raw: Any) -> WorkerSettings:
    if not isinstance(raw, dict):
        raise S3TasksConfigurationError(
            f'S3TASKS["WORKER"] is {raw!r}; it must be a dict such as {{"CONCURRENCY": 8}}.'
        )
    known = {f.name for f in fields(WorkerSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise S3TasksConfigurationError(
            f'Unknown S3TASKS["WORKER"] option(s) {unknown}; valid ones are {sorted(known)}.'
        )
    worker = WorkerSettings(**raw)
    for f in fields(WorkerSettings):
        value = getattr(worker, f.name)
        if f.name == "HEARTBEAT_FILE":
            _typed(f"WORKER.{f.name}", value, str, '"/tmp/s3tasks-worker.alive"')
        elif f.name in ("SHUTDOWN_TIMEOUT", "STATS_INTERVAL"):
            _typed(f"WORKER.{f.name}", value, (int, float), "30")
        else:  # counts and SQS seconds: whole numbers only
            _typed(f"WORKER.{f.name}", value, int, "4")
    if not 1 <= worker.BATCH_SIZE <= 10:
        raise S3TasksConfigurationError('S3TASKS["WORKER"]["BATCH_SIZE"] must be 1..10 (SQS).')
    if not 0 <= worker.WAIT_TIME <= 20:
        raise S3TasksConfigurationError('S3TASKS["WORKER"]["WAIT_TIME"] must be 0..20 (SQS).')
    if worker.CONCURRENCY < 1:
        raise S3TasksConfigurationError('S3TASKS["WORKER"]["CONCURRENCY"] must be at least 1.')
    return worker


def build_settings(raw: dict[str, Any] | None) -> S3TasksSettings:
    """Validate a raw `S3TASKS` dict; raise `ImproperlyConfigured` saying what to fix."""
    raw = dict(raw or {})
    known = {f.name for f in fields(S3TasksSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise S3TasksConfigurationError(
            f"Unknown S3TASKS setting(s) {unknown}; valid ones are {sorted(known)} "
            "(see docs/configuration.md)."
        )
    worker = _build_worker(raw.pop("WORKER", {}))
    conf = S3TasksSettings(WORKER=worker, **raw)
    _typed("REGION", conf.REGION, str, '"us-east-1"')
    if conf.ENDPOINT_URL is not None:
        _typed("ENDPOINT_URL", conf.ENDPOINT_URL, str, '"http://127.0.0.1:5000"')
        if not conf.ENDPOINT_URL.startswith(("http://", "https://")):
            raise S3TasksConfigurationError(
                f'S3TASKS["ENDPOINT_URL"] is {conf.ENDPOINT_URL!r}; it must be a URL such as '
                '"http://127.0.0.1:5000", or leave it unset to use AWS (or AWS_ENDPOINT_URL).'
            )
    _typed("DEFAULT_QUEUE", conf.DEFAULT_QUEUE, str, '"s3tasks-events"')
    if not conf.DEFAULT_QUEUE or conf.DEFAULT_QUEUE.endswith(".fifo"):
        raise S3TasksConfigurationError(
            'S3TASKS["DEFAULT_QUEUE"] must name a standard (non-FIFO) SQS queue: S3 cannot '
            'send notifications to FIFO queues. Example: "s3tasks-events".'
        )
    _choice("DISPATCH", conf.DISPATCH, DISPATCH_MODES)
    _choice("LAMBDA_DISPATCH", conf.LAMBDA_DISPATCH, DISPATCH_MODES)
    _typed("LAMBDA_TIME_MARGIN_MS", conf.LAMBDA_TIME_MARGIN_MS, int, "2000")
    if conf.LAMBDA_TIME_MARGIN_MS < 0:
        raise S3TasksConfigurationError(
            'S3TASKS["LAMBDA_TIME_MARGIN_MS"] must be 0 or more milliseconds, e.g. 2000.'
        )
    _choice("BATCH_TREAT_MISSING_KEYS_AS", conf.BATCH_TREAT_MISSING_KEYS_AS, BATCH_RESULT_CODES)
    _choice("EVENTBRIDGE_KEYS", conf.EVENTBRIDGE_KEYS, EVENTBRIDGE_KEY_FORMS)
    _choice("LOG_FORMAT", conf.LOG_FORMAT, LOG_FORMATS)
    _check_metrics_namespace(conf.METRICS_NAMESPACE)
    if conf.BATCH_HANDLER is not None:
        _typed("BATCH_HANDLER", conf.BATCH_HANDLER, str, '"myapp.handlers.resize"')
    _typed("MAX_RETRIES", conf.MAX_RETRIES, int, "3")
    _typed("RETRY_BACKOFF", conf.RETRY_BACKOFF, int, "5")
    _typed("RUN_LEASE", conf.RUN_LEASE, int, "900")
    if conf.RUN_LEASE < 1:
        raise S3TasksConfigurationError(
            'S3TASKS["RUN_LEASE"] must be at least 1 second; set it above the longest time a '
            "task may wait in your Celery queue plus its run time, e.g. 900."
        )
    _typed("RECOVERY_INTERVAL", conf.RECOVERY_INTERVAL, (int, float), "60.0")
    if conf.RECOVERY_INTERVAL < 0:
        raise S3TasksConfigurationError(
            'S3TASKS["RECOVERY_INTERVAL"] must be 0 (off) or more seconds, e.g. 60.'
        )
    _typed("RULES_CHECK_INTERVAL", conf.RULES_CHECK_INTERVAL, (int, float), "1.0")
    _check_retention(conf.HISTORY_RETENTION)
    _typed("CLEANUP_INTERVAL", conf.CLEANUP_INTERVAL, (int, float), "3600")
    if conf.CLEANUP_INTERVAL < 0:
        raise S3TasksConfigurationError(
            'S3TASKS["CLEANUP_INTERVAL"] must be 0 (off) or more seconds, e.g. 3600.'
        )
    _typed("STORAGE_OPTIONS", conf.STORAGE_OPTIONS, dict, '{"addressing_style": "path"}')
    return _check_sns(conf)


@lru_cache(maxsize=1)
def get_settings() -> S3TasksSettings:
    """The validated settings of this process (reset when tests override `S3TASKS`)."""
    return build_settings(getattr(django_settings, "S3TASKS", None))


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "S3TASKS":
        get_settings.cache_clear()


setting_changed.connect(_reset)
