"""The thin boto3 layer: clients built from the settings, boto3 imported only when needed."""

from __future__ import annotations

import threading
from typing import Any

from s3tasks.exceptions import S3TasksConfigurationError

MISSING_CREDENTIALS = (
    "no AWS credentials found; for a local emulator such as moto's server, which accepts any, "
    "set AWS_ACCESS_KEY_ID=testing and AWS_SECRET_ACCESS_KEY=testing in the environment and "
    'point S3TASKS["ENDPOINT_URL"] at it; for AWS, configure credentials as boto3 documents '
    "(environment variables, ~/.aws/credentials, AWS_PROFILE, an instance or task role): "
    "https://boto3.amazonaws.com/v1/documentation/api/latest/guide/credentials.html"
)

_local = threading.local()


def client(service: str, **overrides: Any) -> Any:
    """A boto3 client for `service` on the configured region/endpoint (one per thread).

    boto3 clients are thread-safe but creating them is not; a per-thread cache avoids both
    the race and the ~10 ms creation cost on hot paths. Raises `S3TasksConfigurationError`
    when no credentials can be found: boto3 would only say "Unable to locate credentials" at
    the first request, as if AWS had refused it.
    """
    from s3tasks.conf import get_settings

    kwargs = {**get_settings().client_kwargs(), **overrides}
    cache_key = (service, tuple(sorted(kwargs.items())))
    cache: dict | None = getattr(_local, "clients", None)
    if cache is None:  # an empty dict is a valid cache: test `is None`, not truthiness
        cache = _local.clients = {}
    found = cache.get(cache_key)
    if found is None:
        import boto3

        session = boto3.session.Session()
        if _needs_credentials(kwargs) and session.get_credentials() is None:
            raise S3TasksConfigurationError(MISSING_CREDENTIALS)
        # The session keeps the credentials it just resolved: the client does not look again.
        found = session.client(service, **kwargs)
        cache[cache_key] = found
    return found


def _needs_credentials(kwargs: dict[str, Any]) -> bool:
    """False when the caller passes keys itself or asks for unsigned requests."""
    from botocore import UNSIGNED

    config = kwargs.get("config")
    unsigned = config is not None and config.signature_version is UNSIGNED
    return not unsigned and not kwargs.get("aws_access_key_id")


def reset_clients() -> None:
    """Forget this thread's cached clients (tests switching endpoints)."""
    _local.clients = {}
