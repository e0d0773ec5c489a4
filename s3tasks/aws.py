"""The thin boto3 layer: clients built from the settings, boto3 imported only when needed."""

from __future__ import annotations

import threading
from typing import Any

_local = threading.local()


def client(service: str, **overrides: Any) -> Any:
    """A boto3 client for `service` on the configured region/endpoint (one per thread).

    boto3 clients are thread-safe but creating them is not; a per-thread cache avoids both
    the race and the ~10 ms creation cost on hot paths.
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

        found = boto3.session.Session().client(service, **kwargs)
        cache[cache_key] = found
    return found


def reset_clients() -> None:
    """Forget this thread's cached clients (tests switching endpoints)."""
    _local.clients = {}
