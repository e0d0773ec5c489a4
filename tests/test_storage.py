"""`S3Event.open()` / `open_object` through django-storages against moto's HTTP server."""

from __future__ import annotations

import pytest

from s3tasks.aws import client
from s3tasks.events import S3Event
from s3tasks.storage import open_object, storage_for, storage_options

pytestmark = pytest.mark.integration


def test_event_open_reads_the_object_from_the_configured_endpoint(moto_endpoint):
    s3 = client("s3")
    s3.create_bucket(Bucket="storage-bucket")
    s3.put_object(Bucket="storage-bucket", Key="dir/red flower.csv", Body=b"a,b\n1,2\n")
    event = S3Event(
        bucket="storage-bucket", key="dir/red flower.csv", event_name="ObjectCreated:Put"
    )
    with event.open() as body:
        assert body.read() == b"a,b\n1,2\n"


def test_open_object_can_write_through_the_same_storage(moto_endpoint):
    client("s3").create_bucket(Bucket="storage-out")
    with open_object("storage-out", "out/result.txt", "wb") as body:
        body.write(b"done")
    assert client("s3").get_object(Bucket="storage-out", Key="out/result.txt")["Body"].read() == (
        b"done"
    )


def test_storages_are_cached_per_bucket_and_follow_the_endpoint(moto_endpoint, settings):
    assert storage_for("one") is storage_for("one")
    assert storage_for("one") is not storage_for("two")
    options = storage_options("one")
    assert options["endpoint_url"] == moto_endpoint
    assert (options["signature_version"], options["addressing_style"]) == ("s3v4", "path")
    settings.S3TASKS = {**settings.S3TASKS, "STORAGE_OPTIONS": {"querystring_expire": 60}}
    assert storage_options("one")["querystring_expire"] == 60
    assert storage_for("one").querystring_expire == 60


def test_presigned_url_is_sigv4(moto_endpoint):
    client("s3").create_bucket(Bucket="storage-url")
    url = storage_for("storage-url").url("k.txt")
    assert url.startswith(moto_endpoint + "/storage-url/k.txt") and "X-Amz-Signature" in url
