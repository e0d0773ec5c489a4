"""pytest fixtures for testing s3tasks handlers (registered through the `pytest11` entry
point, so installing s3tasks is enough).

Nothing is imported from Django or s3tasks' models when pytest loads this plugin: a project
that does not use Django, or sets it up later (pytest-django), is not affected. Fixtures
import `s3tasks.testing` when a test asks for them.

- `s3tasks_event_factory`: `make_s3_event` (`s3tasks_event_factory("bucket", "key")`).
- `s3tasks_deliver`: `deliver`, with the test database enabled (pytest-django's `db`; a
  `django_db(transaction=True)` mark still applies).
- `s3tasks_followups`: the follow-up commands issued during the test, captured, not sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from s3tasks.events import S3Event
    from s3tasks.testing.delivery import Delivery
    from s3tasks.testing.followups import FollowUpCapture


@pytest.fixture
def s3tasks_event_factory() -> Callable[..., S3Event]:
    """`make_s3_event`: an `S3Event` parsed from the notification S3 would send."""
    from s3tasks.testing.payloads import make_s3_event

    return make_s3_event


@pytest.fixture
def s3tasks_deliver(db: None) -> Callable[..., Delivery]:
    """`deliver`: route and dispatch events synchronously; returns a `Delivery`."""
    from s3tasks.testing.delivery import deliver

    return deliver


@pytest.fixture
def s3tasks_followups() -> Iterator[FollowUpCapture]:
    """Every follow-up command issued during the test, captured instead of sent."""
    from s3tasks.testing.followups import captured_followups

    with captured_followups() as captured:
        yield captured
