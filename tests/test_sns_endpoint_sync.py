"""HTTPS subscriptions: the `Subscription` row with an endpoint, `sync_notifications`' plan for
it, and the whole path on moto's server — sync subscribes the running server's endpoint, moto
delivers S3 events to it over HTTP, and signed messages posted to it run their handler once."""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import load_pem_x509_certificate
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction
from sns_support import BUCKET, TOPIC, TOPIC_ARN, SnsWorld, notification, sign

from s3tasks import S3Event, s3_handler
from s3tasks.aws import client
from s3tasks.exceptions import S3TasksConfigurationError
from s3tasks.models import (
    Bucket,
    HandlerBinding,
    HandlerRun,
    NotificationRule,
    Queue,
    Subscription,
    Topic,
)
from s3tasks.provisioning.current import (
    CurrentState,
    CurrentSubscription,
    CurrentTopic,
    read_subscriptions,
)
from s3tasks.provisioning.desired import Account, build_desired
from s3tasks.provisioning.model_rows import ModelRows, SubscriptionRow, TopicRow
from s3tasks.provisioning.ownership import Ledger
from s3tasks.provisioning.plan import compute_steps
from s3tasks.provisioning.steps import Action, Subscribe
from s3tasks.rules.routing import router
from s3tasks.sns import fetch
from s3tasks.sns.certificates import clear_cache
from s3tasks.sns.trusted_urls import AWS_SNS_HOST

ACCOUNT = Account(id="123456789012", region="us-east-1")
ENDPOINT = "https://app.example.com/s3tasks/sns/"
CALLS: list[str] = []


@s3_handler(name="sns_sync_tests.record")
def record_call(event: S3Event) -> None:
    CALLS.append(event.key)


def plan_for(current: CurrentState, **row: Any) -> list[Any]:
    rows = ModelRows(
        topics=(TopicRow(TOPIC),),
        subscriptions=(SubscriptionRow(TOPIC, "", endpoint=ENDPOINT, **row),),
    )
    desired = build_desired(rows, default_queue="events", account=ACCOUNT)
    return [s for s in compute_steps(desired, current, ledger=Ledger()).steps if s.change]


def topic_exists() -> CurrentState:
    return CurrentState(topics={TOPIC: CurrentTopic(TOPIC, TOPIC_ARN)})


# --- the plan (pure) ----------------------------------------------------------------------


def test_the_plan_subscribes_an_https_endpoint_to_its_topic():
    steps = plan_for(topic_exists())

    subscribe = next(s for s in steps if s.action == Action.SUBSCRIBE)
    assert subscribe.message == (
        f"subscribe https endpoint {TOPIC} → {ENDPOINT} (the endpoint confirms it)"
    )
    assert subscribe.change == Subscribe(
        TOPIC_ARN, ENDPOINT, {"RawMessageDelivery": "false"}, "https"
    )


def test_a_pending_https_subscription_is_subscribed_again_to_resend_the_confirmation():
    pending = CurrentSubscription("", TOPIC_ARN, ENDPOINT, protocol="https", pending=True)
    current = CurrentState(topics=topic_exists().topics, subscriptions=(pending,))

    (step,) = [s for s in plan_for(current) if s.action == Action.SUBSCRIBE]

    assert "ask again for confirmation" in step.message and "pending" in step.message


def test_a_confirmed_https_subscription_needs_no_change():
    confirmed = CurrentSubscription(f"{TOPIC_ARN}:1", TOPIC_ARN, ENDPOINT, protocol="https")
    current = CurrentState(topics=topic_exists().topics, subscriptions=(confirmed,))
    ledger = Ledger({("subscription", f"{TOPIC_ARN}#{ENDPOINT}"): "created"})
    rows = ModelRows(
        topics=(TopicRow(TOPIC),), subscriptions=(SubscriptionRow(TOPIC, "", endpoint=ENDPOINT),)
    )
    desired = build_desired(rows, default_queue="events", account=ACCOUNT)

    plan = compute_steps(desired, current, ledger=ledger)

    assert not [s for s in plan.steps if s.resource_type == "subscription"]


def test_raw_delivery_to_an_https_endpoint_is_refused_before_aws_is_called():
    with pytest.raises(S3TasksConfigurationError, match="carries no signature"):
        plan_for(topic_exists(), raw_message_delivery=True)


def test_an_endpoint_that_is_no_http_url_is_refused_before_aws_is_called():
    rows = ModelRows(
        topics=(TopicRow(TOPIC),),
        subscriptions=(SubscriptionRow(TOPIC, "", endpoint="mailto:ops@example.com"),),
    )
    with pytest.raises(S3TasksConfigurationError, match="names no http"):
        build_desired(rows, default_queue="events", account=ACCOUNT)


class ListingSns:
    """What `read_subscriptions` asks SNS, answered from a fixed listing."""

    def __init__(self, listing: list[dict[str, str]]) -> None:
        self.listing = listing
        self.attributes_read: list[str] = []

    def get_paginator(self, name: str) -> Any:
        assert name == "list_subscriptions_by_topic"
        listing = self.listing

        class Paginator:
            def paginate(self, TopicArn: str) -> list[dict[str, Any]]:  # noqa: N803 (boto3's)
                return [{"Subscriptions": listing}]

        return Paginator()

    def get_subscription_attributes(self, SubscriptionArn: str) -> dict[str, Any]:  # noqa: N803
        self.attributes_read.append(SubscriptionArn)
        return {"Attributes": {"RawMessageDelivery": "false"}}


def test_reading_subscriptions_keeps_https_ones_and_marks_the_pending():
    sns = ListingSns(
        [
            {"SubscriptionArn": "PendingConfirmation", "Protocol": "https", "Endpoint": ENDPOINT},
            {"SubscriptionArn": f"{TOPIC_ARN}:1", "Protocol": "https", "Endpoint": "https://b/"},
            {"SubscriptionArn": f"{TOPIC_ARN}:2", "Protocol": "email", "Endpoint": "a@b.c"},
        ]
    )

    pending, confirmed = read_subscriptions(sns, [TOPIC_ARN])

    assert (pending.pending, pending.arn, pending.endpoint) == (True, "", ENDPOINT)
    assert (confirmed.pending, confirmed.protocol, confirmed.arn) == (
        False,
        "https",
        f"{TOPIC_ARN}:1",
    )
    assert sns.attributes_read == [f"{TOPIC_ARN}:1"]  # SNS has none for a pending one


# --- the row ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({}, "queue"),  # neither a queue nor an endpoint
        ({"queue": True, "endpoint": ENDPOINT}, "queue"),  # both
        ({"endpoint": "http://app.example.com/s3tasks/sns/"}, "endpoint"),
        ({"endpoint": ENDPOINT, "raw_message_delivery": True}, "raw_message_delivery"),
    ],
)
def test_a_subscription_row_is_a_queue_or_an_https_endpoint(values, field):
    topic = Topic.objects.create(name=TOPIC)
    if values.pop("queue", False):
        values["queue"] = Queue.objects.create(name="q")

    with pytest.raises(ValidationError) as caught:
        Subscription(topic=topic, **values).full_clean()

    assert field in caught.value.message_dict


@pytest.mark.django_db
def test_the_database_refuses_a_subscription_with_both_a_queue_and_an_endpoint():
    topic = Topic.objects.create(name=TOPIC)
    queue = Queue.objects.create(name="q")

    with pytest.raises(IntegrityError), transaction.atomic():
        Subscription.objects.create(topic=topic, queue=queue, endpoint=ENDPOINT)


@pytest.mark.django_db
def test_an_https_subscription_row_says_its_protocol():
    row = Subscription(topic=Topic(name=TOPIC), endpoint=ENDPOINT)
    row.full_clean(exclude=["topic"])
    assert (row.protocol, str(row)) == ("https", f"{TOPIC} → {ENDPOINT}")


# --- end to end on moto's server ----------------------------------------------------------


@pytest.fixture
def world(tmp_path) -> Iterator[SnsWorld]:
    world = SnsWorld.create(tmp_path)
    yield world
    world.host.stop()


@pytest.fixture
def moto_cert_host(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """moto signs with a certificate it serves itself while SigningCertURL names
    sns.<region>.amazonaws.com: fetch those from moto's server. Returns the PEMs fetched."""
    real_get = fetch.get
    moto = urlsplit(moto_endpoint)
    fetched: list[bytes] = []

    def get(host: str, port: int, target: str, **kwargs: Any) -> tuple[int, bytes]:
        if not AWS_SNS_HOST.fullmatch(host):
            return real_get(host, port, target, **kwargs)
        region = host.split(".")[1]
        # An unsigned GET reaches moto's S3; a SigV4-shaped header routes it to SNS.
        scope = f"testing/20260101/{region}/sns/aws4_request"
        authorization = f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0"
        connection = http.client.HTTPConnection(moto.hostname, moto.port, timeout=5)
        connection.request("GET", target, headers={"Authorization": authorization})
        response = connection.getresponse()
        body = response.read()
        connection.close()
        fetched.append(body)
        return response.status, body

    monkeypatch.setattr(fetch, "get", get)
    return fetched


@pytest.fixture
def seen_messages(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every SnsMessage the endpoint verified (or refused), in order."""
    from s3tasks.sns import views

    seen: list[Any] = []
    real_verify = views.verify_message

    def verify(message: Any, **kwargs: Any) -> None:
        seen.append(message)
        real_verify(message, **kwargs)

    monkeypatch.setattr(views, "verify_message", verify)
    return seen


def post_over_http(url: str, document: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(document).encode(),
        headers={"Content-Type": "text/plain; charset=UTF-8"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_sync_subscribes_the_running_server_and_moto_delivers_to_it(
    live_server, moto_endpoint, moto_cert_host, seen_messages, world, settings, capsys, caplog
):
    settings.S3TASKS = {**settings.S3TASKS, **world.settings(), "DISPATCH": "inline"}
    clear_cache()
    router.invalidate()
    CALLS.clear()
    endpoint = f"{live_server.url}/s3tasks/sns/"
    topic = Topic.objects.create(name=TOPIC)
    bucket = Bucket.objects.create(name=BUCKET)
    rule = NotificationRule.objects.create(
        bucket=bucket, events=["s3:ObjectCreated:*"], prefix="incoming/", topic=topic
    )
    HandlerBinding.objects.create(rule=rule, handler_name="sns_sync_tests.record")
    Subscription.objects.create(topic=topic, endpoint=endpoint)

    # 1. sync shows the subscription in its plan and makes it in moto
    call_command("sync_notifications", "--no-input")
    out = capsys.readouterr().out
    assert f"subscribe http endpoint {TOPIC} → {endpoint}" in out
    (listed,) = client("sns").list_subscriptions_by_topic(TopicArn=TOPIC_ARN)["Subscriptions"]
    assert (listed["Protocol"], listed["Endpoint"]) == ("http", endpoint)
    assert Subscription.objects.get().arn == listed["SubscriptionArn"]
    assert Topic.objects.get().arn == TOPIC_ARN
    call_command("sync_notifications", "--dry-run")  # in sync: exit 0, no CommandError

    # 2. an upload: S3 → SNS → HTTP POST to this server, refused (moto's certificate is
    # self-issued under an Amazon CA's name), though its signature matches what we rebuild
    seen_messages.clear()
    with caplog.at_level(logging.WARNING, logger="s3tasks.sns"):
        client("s3").put_object(Bucket=BUCKET, Key="incoming/from-moto.csv", Body=b"a,b\n")
    assert "issuer (CN=Amazon RSA 2048 M01,O=Amazon,C=US) is no trusted CA" in caplog.text
    (from_moto,) = [m for m in seen_messages if "from-moto" in m.document["Message"]]
    assert (from_moto.topic_arn, from_moto.signature_version) == (TOPIC_ARN, "2")
    certificate = load_pem_x509_certificate(moto_cert_host[-1])
    certificate.public_key().verify(  # raises unless our signed text is what moto signed
        from_moto.signature, from_moto.signed_text, padding.PKCS1v15(), hashes.SHA256()
    )
    assert CALLS == [] and not HandlerRun.objects.exists()

    # 3. messages signed with a certificate our CA issued, posted to the same server, run once
    message = sign(
        notification(world.signing_cert_url, key="incoming/signed.csv"), world.signing_key
    )
    assert post_over_http(endpoint, message) == 200
    assert post_over_http(endpoint, message) == 200
    assert CALLS == ["incoming/signed.csv"]
    assert HandlerRun.objects.get().handler_name == "sns_sync_tests.record"
