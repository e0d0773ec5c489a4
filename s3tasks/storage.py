"""Open S3 objects through django-storages, on the same endpoint/region as the rest of s3tasks.

`S3Event.open()` lands here. One `S3Storage` per bucket (and configuration) is cached: building
one costs a boto3 resource, and handlers open objects on every event.
"""

from __future__ import annotations

import threading
from typing import IO, Any

from django.conf import settings as django_settings

_storages: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def storage_options(bucket: str) -> dict[str, Any]:
    """`S3Storage` options for `bucket`: `S3TASKS["REGION"]` (always set: it has a default),
    the endpoint from S3TASKS (else `AWS_S3_ENDPOINT_URL`), SigV4 with path-style addressing,
    then `S3TASKS["STORAGE_OPTIONS"]` on top."""
    from s3tasks.conf import get_settings

    conf = get_settings()
    options: dict[str, Any] = {
        "bucket_name": bucket,
        "region_name": conf.REGION,
        "signature_version": getattr(django_settings, "AWS_S3_SIGNATURE_VERSION", None) or "s3v4",
        "addressing_style": getattr(django_settings, "AWS_S3_ADDRESSING_STYLE", None) or "path",
        "file_overwrite": True,
    }
    endpoint = conf.ENDPOINT_URL or getattr(django_settings, "AWS_S3_ENDPOINT_URL", None)
    if endpoint:
        options["endpoint_url"] = endpoint
    options.update(conf.STORAGE_OPTIONS)
    return options


def storage_for(bucket: str) -> Any:
    """The cached django-storages `S3Storage` for `bucket`."""
    options = storage_options(bucket)
    key = tuple(sorted((k, repr(v)) for k, v in options.items()))
    found = _storages.get(key)
    if found is None:
        from storages.backends.s3 import S3Storage

        with _lock:
            found = _storages.get(key)
            if found is None:
                found = _storages[key] = S3Storage(**options)
    return found


def open_object(bucket: str, key: str, mode: str = "rb") -> IO[Any]:
    """Open `s3://bucket/key` as a file (read by default) through django-storages."""
    return storage_for(bucket).open(key, mode)


def reset_storages() -> None:
    """Forget cached storages (tests switching endpoints)."""
    with _lock:
        _storages.clear()
