"""The SNS HTTP(S) endpoint (`s3tasks.urls`): every message verified before anything runs.

Signatures are real (RSA keys and certificates made here); the signing certificate is served
by an HTTPS stub on 127.0.0.1 (`S3TASKS["SNS_CERT_HOSTS"]`), its TLS and the certificate chain
verified against a test root CA (`S3TASKS["SNS_CA_BUNDLE"]`). `REJECTED` is the table of
messages that must be refused (docs/sns-endpoint.md has the same table).
"""

from __future__ import annotations

import importlib
import json
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from sns_support import (
    ACCOUNT,
    BUCKET,
    NOW,
    REGION,
    TOPIC,
    TOPIC_ARN,
    Authority,
    SnsWorld,
    StubHost,
    confirmation,
    new_key,
    notification,
    pem,
    sign,
    subscribe_query,
)

from s3tasks import S3Event, s3_handler
from s3tasks.conf import build_settings
from s3tasks.exceptions import (
    ImproperlyInstalled,
    S3TasksConfigurationError,
    UnverifiedSnsMessage,
)
from s3tasks.models import (
    Bucket,
    EventRecord,
    HandlerBinding,
    HandlerRun,
    MessageFailure,
    NotificationRule,
    RunState,
    Topic,
)
from s3tasks.rules.routing import router
from s3tasks.sns.certificates import clear_cache
from s3tasks.sns.messages import read_message
from s3tasks.sns.verification import verify_message
from s3tasks.testing import s3_notification

pytestmark = pytest.mark.django_db

CALLS: list[str] = []
URL = "/s3tasks/sns/"
OTHER_TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:other"


@s3_handler(name="sns_tests.record")
def record_call(event: S3Event) -> str:
    CALLS.append(event.key)
    return f"handled {event.key}"


@s3_handler(name="sns_tests.explode")
def explode(event: S3Event) -> None:
    CALLS.append(event.key)
    raise RuntimeError(f"cannot handle {event.key}")


def bind(handler_name: str, prefix: str = "incoming/") -> None:
    bucket, _ = Bucket.objects.get_or_create(name=BUCKET)
    rule = NotificationRule.objects.create(
        bucket=bucket, events=["s3:ObjectCreated:*"], prefix=prefix
    )
    HandlerBinding.objects.create(rule=rule, handler_name=handler_name)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnsWorld]:
    world = SnsWorld.create(tmp_path_factory.mktemp("sns"))
    yield world
    world.host.stop()


@pytest.fixture(autouse=True)
def endpoint(world: SnsWorld, settings: Any) -> Iterator[None]:
    """A known topic routed to `sns_tests.record`; the world's host and root trusted."""
    settings.S3TASKS = {**settings.S3TASKS, **world.settings(), "DISPATCH": "inline"}
    clear_cache()
    router.invalidate()
    CALLS.clear()
    world.host.gets.clear()
    Topic.objects.create(name=TOPIC, arn=TOPIC_ARN)
    bind("sns_tests.record")
    yield
    clear_cache()
    router.invalidate()
    CALLS.clear()


def post(document: dict[str, Any] | bytes, client: Client | None = None, **headers: str) -> Any:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return (client or Client()).post(
        URL, data=body, content_type="text/plain; charset=UTF-8", **headers
    )


def signed_notification(world: SnsWorld, version: str = "1", **fields: Any) -> dict[str, Any]:
    return sign(notification(world.signing_cert_url, **fields), world.signing_key, version)


def serve_certificate(world: SnsWorld, name: str, *certificates: Any) -> str:
    return world.host.serve(f"/SimpleNotificationService-{name}.pem", pem(*certificates))


# --- what is accepted ----------------------------------------------------------------------


def test_the_endpoint_is_mounted_by_s3tasks_urls():
    assert reverse("s3tasks:sns-endpoint") == URL


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_valid_notification_runs_its_handler_once(world, version):
    response = post(signed_notification(world, version, key="incoming/a b.csv"))

    assert response.status_code == 200
    assert CALLS == ["incoming/a b.csv"]
    run = HandlerRun.objects.get()
    assert (run.handler_name, run.state) == ("sns_tests.record", RunState.SUCCEEDED)
    assert EventRecord.objects.get().queue_name == f"sns:{TOPIC}"


def test_the_same_notification_posted_twice_runs_nothing_twice(world):
    message = signed_notification(world)

    first, second = post(message), post(message)

    assert (first.status_code, second.status_code) == (200, 200)
    assert CALLS == ["incoming/report.csv"]
    assert HandlerRun.objects.count() == 1 and EventRecord.objects.count() == 1


def test_the_same_upload_in_two_sns_messages_runs_once(world):
    # SNS may publish one S3 event twice (two MessageIds): the event's own key dedupes it.
    post(signed_notification(world, message_id="first"))
    post(signed_notification(world, message_id="second"))

    assert CALLS == ["incoming/report.csv"]


def test_the_signing_certificate_is_fetched_once_then_cached(world):
    for key in ("incoming/1.csv", "incoming/2.csv", "incoming/3.csv"):
        assert post(signed_notification(world, key=key)).status_code == 200

    assert world.host.gets == ["/SimpleNotificationService-good.pem"]
    assert len(CALLS) == 3


def test_a_cached_certificate_is_refused_once_it_has_expired(world):
    verify_message(read_message(json.dumps(signed_notification(world)).encode()))  # cached
    later = NOW + timedelta(days=31)  # past the certificate's not-after
    message = read_message(json.dumps(signed_notification(world, timestamp=later)).encode())

    with pytest.raises(UnverifiedSnsMessage, match="expired"):
        verify_message(message, now=later)
    assert world.host.gets == ["/SimpleNotificationService-good.pem"]  # from the cache


def test_a_topic_listed_in_settings_is_known_without_a_topic_row(world, settings):
    Topic.objects.all().delete()
    settings.S3TASKS = {**settings.S3TASKS, "SNS_TOPIC_ARNS": [TOPIC_ARN]}

    assert post(signed_notification(world)).status_code == 200
    assert CALLS == ["incoming/report.csv"]


def test_intermediates_in_the_pem_file_complete_the_chain(world):
    intermediate = world.root.intermediate()
    key = new_key()
    url = serve_certificate(world, "chain", intermediate.issue(key), intermediate.certificate)

    response = post(sign(notification(url), key, "2"))

    assert response.status_code == 200 and CALLS == ["incoming/report.csv"]


def test_the_issuer_named_by_authority_information_access_is_fetched_and_verified(world):
    # As AWS serves it: the .pem holds the leaf only; its issuer is found through its AIA.
    intermediate = world.root.intermediate()
    aia = StubHost().start()  # plain http, as CAs publish issuer certificates
    try:
        from cryptography.hazmat.primitives.serialization import Encoding

        aia_url = aia.serve(
            "/intermediate.cer", intermediate.certificate.public_bytes(Encoding.DER)
        )
        key = new_key()
        url = serve_certificate(world, "aia", intermediate.issue(key, ca_issuers_url=aia_url))

        assert post(sign(notification(url), key)).status_code == 200
        assert post(sign(notification(url, key="incoming/2.csv"), key)).status_code == 200
    finally:
        aia.stop()
    assert CALLS == ["incoming/report.csv", "incoming/2.csv"]
    assert aia.gets == ["/intermediate.cer"]  # once: cached with the leaf


def test_an_s3_test_event_is_acknowledged_and_runs_nothing(world):
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}

    response = post(signed_notification(world, message=json.dumps(test_event)))

    assert response.status_code == 200 and CALLS == []


def test_csrf_protection_does_not_apply(world):
    response = post(signed_notification(world), client=Client(enforce_csrf_checks=True))

    assert response.status_code == 200


def test_only_post_is_allowed():
    assert Client().get(URL).status_code == 405


# --- subscriptions ------------------------------------------------------------------------


def test_a_subscription_confirmation_for_a_known_topic_visits_subscribe_url(world, caplog):
    world.host.serve("/", b"<ConfirmSubscriptionResponse/>")
    message = confirmation(world.signing_cert_url, world.host.url(subscribe_query()))

    with caplog.at_level(logging.INFO, logger="s3tasks.sns"):
        response = post(sign(message, world.signing_key))

    assert response.status_code == 200
    assert subscribe_query() in world.host.gets
    assert f"confirmed the SNS subscription of this endpoint to topic {TOPIC_ARN}" in caplog.text
    assert "Token=" not in caplog.text


def test_a_subscription_confirmation_that_sns_does_not_accept_answers_503(world):
    world.host.serve("/", b"throttled", status=500)
    message = confirmation(world.signing_cert_url, world.host.url(subscribe_query()))

    response = post(sign(message, world.signing_key))

    assert response.status_code == 503  # SNS sends the confirmation again
    assert subscribe_query() in world.host.gets


def test_an_unsubscribe_confirmation_is_logged_and_visits_nothing(world, caplog):
    message = confirmation(
        world.signing_cert_url, world.host.url(subscribe_query()), kind="UnsubscribeConfirmation"
    )

    with caplog.at_level(logging.INFO, logger="s3tasks.sns"):
        response = post(sign(message, world.signing_key))

    assert response.status_code == 200
    assert world.host.gets == ["/SimpleNotificationService-good.pem"]  # no SubscribeURL visit
    assert f"SNS unsubscribed this endpoint from topic {TOPIC_ARN}" in caplog.text


# --- what SNS must deliver again ------------------------------------------------------------


def test_a_failing_handler_answers_500_so_sns_delivers_again(world):
    bind("sns_tests.explode", prefix="incoming/bad")

    response = post(signed_notification(world, key="incoming/bad.csv"))

    assert response.status_code == 500
    assert HandlerRun.objects.get(handler_name="sns_tests.explode").state == RunState.RETRYING


def test_a_message_that_is_no_s3_event_is_recorded_and_answers_500(world):
    message = signed_notification(world, message="hello from someone's own publisher")

    response = post(message)

    assert response.status_code == 500  # SNS retries, then its subscription DLQ keeps it
    failure = MessageFailure.objects.get()
    assert (failure.queue_name, failure.message_id) == (f"sns:{TOPIC}", message["MessageId"])
    assert "hello from someone" in failure.body_excerpt
    assert CALLS == []


def test_an_unreachable_certificate_host_answers_503(world, settings):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.S3TASKS = {**settings.S3TASKS, "SNS_CERT_HOSTS": [f"127.0.0.1:{port}"]}
    url = f"https://127.0.0.1:{port}/SimpleNotificationService-good.pem"

    response = post(sign(notification(url), world.signing_key))

    assert response.status_code == 503 and CALLS == []


def test_a_failing_certificate_host_answers_503(world):
    url = world.host.serve("/SimpleNotificationService-busy.pem", b"busy", status=503)

    assert post(sign(notification(url), world.signing_key)).status_code == 503


def test_a_certificate_host_whose_tls_is_not_trusted_answers_503(world, settings, tmp_path):
    other = tmp_path / "other.pem"
    other.write_bytes(pem(Authority.root("unrelated root").certificate))
    settings.S3TASKS = {**settings.S3TASKS, "SNS_CA_BUNDLE": str(other)}

    assert post(signed_notification(world)).status_code == 503
    assert CALLS == []


# --- what is refused: the table -----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A POST the endpoint must refuse with 403, and the reason it must log."""

    id: str
    build: Callable[[SnsWorld], dict[str, Any] | bytes]
    reason: str
    settings: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _note(world: SnsWorld, **fields: Any) -> dict[str, Any]:
    return notification(world.signing_cert_url, **fields)


def _signed_with_url(url: str | Callable[[SnsWorld], str]) -> Callable[[SnsWorld], dict]:
    def build(world: SnsWorld) -> dict[str, Any]:
        where = url(world) if callable(url) else url
        return sign(notification(where), world.signing_key)

    return build


def _without(name: str) -> Callable[[SnsWorld], dict]:
    def build(world: SnsWorld) -> dict[str, Any]:
        message = sign(_note(world), world.signing_key)
        del message[name]
        return message

    return build


def _changed(**values: Any) -> Callable[[SnsWorld], dict]:
    return lambda world: {**sign(_note(world), world.signing_key), **values}


def _cut_signature(world: SnsWorld) -> dict[str, Any]:
    message = sign(_note(world), world.signing_key)
    return {**message, "Signature": message["Signature"][:-8]}


def _certificate(name: str, make: Callable[[SnsWorld, Any], tuple]) -> Callable[[SnsWorld], dict]:
    """A notification signed by a fresh key whose certificate(s) `make` returns."""

    def build(world: SnsWorld) -> dict[str, Any]:
        key = new_key()
        url = serve_certificate(world, name, *make(world, key))
        return sign(notification(url), key)

    return build


def _self_issued_with_the_roots_name(world: SnsWorld, key: Any) -> tuple:
    # Issuer *name* of the trusted root, signed by the leaf's own key: a name proves nothing.
    impostor = Authority(world.root.name, key, world.root.certificate)
    return (impostor.issue(key),)


def _other_ca_named_by_aia(world: SnsWorld, key: Any) -> tuple:
    impostor = Authority.root("impostor CA")
    aia_url = world.host.serve("/impostor.pem", pem(impostor.certificate))
    return (impostor.issue(key, ca_issuers_url=aia_url),)


def _confirm_for(topic_arn: str, subscribe: Callable[[SnsWorld], str]) -> Callable:
    def build(world: SnsWorld) -> dict[str, Any]:
        message = confirmation(world.signing_cert_url, subscribe(world), topic_arn=topic_arn)
        return sign(message, world.signing_key)

    return build


def _raw_delivery(world: SnsWorld) -> bytes:
    from s3tasks.testing import s3_record

    return json.dumps(s3_notification(s3_record(BUCKET, "incoming/raw.csv"))).encode()


def _duplicate_name(world: SnsWorld) -> bytes:
    text = json.dumps(sign(_note(world), world.signing_key))
    return text[:-1].encode() + b', "Message": "{}"}'


AWS = f"sns.{REGION}.amazonaws.com"
PEM = "/SimpleNotificationService-1.pem"

REJECTED = [
    Case(
        "forged: signed by a key the certificate does not hold",
        lambda w: sign(_note(w), new_key()),
        "does not match",
    ),
    Case(
        "tampered: Message changed after signing",
        _changed(Message='{"Records": []}'),
        "does not match",
    ),
    Case(
        "tampered: TopicArn changed to another known topic",
        lambda w: {**sign(_note(w), w.signing_key), "TopicArn": OTHER_TOPIC},
        "does not match",
        settings={"SNS_TOPIC_ARNS": [OTHER_TOPIC]},
    ),
    Case("tampered: Subject removed after signing", _without("Subject"), "does not match"),
    Case(
        "truncated body",
        lambda w: json.dumps(sign(_note(w), w.signing_key)).encode()[:-40],
        "not JSON",
    ),
    Case("truncated signature", _cut_signature, "does not match"),
    Case("signature that is not base64", _changed(Signature="%%%not-base64%%%"), "not base64"),
    Case("no Signature", _without("Signature"), "Signature is None"),
    Case(
        "SignatureVersion 3", _changed(SignatureVersion="3"), "SignatureVersion '3' is not accepted"
    ),
    Case(
        "SignatureVersion 2 claimed, SHA1 used",
        lambda w: sign(_note(w), w.signing_key, "2", digest="1"),
        "does not match",
    ),
    Case(
        "SignatureVersion 1 claimed, SHA256 used",
        lambda w: sign(_note(w), w.signing_key, "1", digest="2"),
        "does not match",
    ),
    Case(
        "SignatureVersion 1 when only 2 is accepted",
        lambda w: sign(_note(w), w.signing_key, "1"),
        "is not accepted",
        settings={"SNS_SIGNATURE_VERSIONS": ["2"]},
    ),
    Case(
        "certificate URL over http",
        _signed_with_url(lambda w: w.signing_cert_url.replace("https:", "http:")),
        "is not https",
    ),
    Case(
        "certificate URL on another domain",
        _signed_with_url(f"https://certs.example.com{PEM}"),
        "not on an SNS host",
    ),
    Case(
        "certificate URL on sns.evil.com",
        _signed_with_url(f"https://sns.evil.com{PEM}"),
        "not on an SNS host",
    ),
    Case(
        "certificate URL on a lookalike domain",
        _signed_with_url(f"https://{AWS}.evil.com{PEM}"),
        "not on an SNS host",
    ),
    Case(
        "certificate URL on an amazonaws.com host that is not SNS",
        _signed_with_url(f"https://s3.{REGION}.amazonaws.com{PEM}"),
        "not on an SNS host",
    ),
    Case(
        "certificate URL with user info before another host",
        _signed_with_url(f"https://{AWS}@evil.com{PEM}"),
        "carries user info",
    ),
    Case(
        "certificate URL with user info before the SNS host",
        _signed_with_url(f"https://evil.com@{AWS}{PEM}"),
        "carries user info",
    ),
    Case(
        "certificate URL with a backslash trick",
        _signed_with_url(f"https://evil.com\\@{AWS}{PEM}"),
        "holds characters",
    ),
    Case(
        "certificate URL with a lookalike port on the SNS host",
        _signed_with_url(f"https://{AWS}:8443{PEM}"),
        "not on an SNS host",
    ),
    Case(
        "certificate URL on the configured host's other port",
        _signed_with_url(lambda w: f"https://127.0.0.1:{w.host.port + 1}{PEM}"),
        "not on an SNS host",
    ),
    Case(
        "certificate URL that names no .pem file",
        _signed_with_url(lambda w: w.host.url("/cert.txt")),
        "names no .pem file",
    ),
    Case(
        "certificate URL with a query",
        _signed_with_url(lambda w: w.host.url(f"{PEM}?x=1")),
        "names no .pem file",
    ),
    Case(
        "certificate URL that answers 404",
        _signed_with_url(lambda w: w.host.url("/SimpleNotificationService-gone.pem")),
        "answered HTTP 404",
    ),
    Case(
        "certificate URL that serves no certificate",
        _signed_with_url(lambda w: w.host.serve("/SimpleNotificationService-text.pem", b"hello")),
        "sent no PEM certificate",
    ),
    Case(
        "expired certificate",
        _certificate(
            "expired",
            lambda w, k: (
                w.root.issue(
                    k, not_before=NOW - timedelta(days=10), not_after=NOW - timedelta(days=1)
                ),
            ),
        ),
        "expired on",
    ),
    Case(
        "certificate not valid yet",
        _certificate("future", lambda w, k: (w.root.issue(k, not_before=NOW + timedelta(days=1)),)),
        "not valid before",
    ),
    Case(
        "certificate of another CA",
        _certificate("other-ca", lambda w, k: (Authority.root("impostor CA").issue(k),)),
        "names no caIssuers URL",
    ),
    Case(
        "certificate with another CA's root in the .pem",
        _certificate(
            "other-chain",
            lambda w, k: ((a := Authority.root("impostor CA")).issue(k), a.certificate),
        ),
        "does not chain",
    ),
    Case(
        "certificate whose AIA names another CA",
        _certificate("other-aia", _other_ca_named_by_aia),
        "does not chain",
    ),
    Case(
        "certificate naming the trusted CA as issuer, self-signed",
        _certificate("self", _self_issued_with_the_roots_name),
        "does not chain",
    ),
    Case(
        "Timestamp two hours old (a replay)",
        lambda w: sign(_note(w, timestamp=datetime.now(UTC) - timedelta(hours=2)), w.signing_key),
        "SNS_MAX_MESSAGE_AGE",
    ),
    Case(
        "Timestamp older than a shorter SNS_MAX_MESSAGE_AGE",
        lambda w: sign(
            _note(w, timestamp=datetime.now(UTC) - timedelta(minutes=10)), w.signing_key
        ),
        "SNS_MAX_MESSAGE_AGE",
        settings={"SNS_MAX_MESSAGE_AGE": timedelta(minutes=5)},
    ),
    Case(
        "Timestamp an hour ahead",
        lambda w: sign(_note(w, timestamp=datetime.now(UTC) + timedelta(hours=1)), w.signing_key),
        "ahead of this server's clock",
    ),
    Case(
        "Timestamp without a zone",
        lambda w: sign({**_note(w), "Timestamp": "2026-01-01T00:00:00"}, w.signing_key),
        "no ISO 8601 time with a zone",
    ),
    Case(
        "unknown topic",
        lambda w: sign(_note(w, topic_arn=OTHER_TOPIC), w.signing_key),
        "neither a Topic row",
    ),
    Case(
        "a known topic's name in another account",
        lambda w: sign(
            _note(w, topic_arn=f"arn:aws:sns:{REGION}:999999999999:{TOPIC}"), w.signing_key
        ),
        "neither a Topic row",
    ),
    Case(
        "message type header disagrees with the body",
        lambda w: sign(_note(w), w.signing_key),
        "disagrees",
        headers={"HTTP_X_AMZ_SNS_MESSAGE_TYPE": "SubscriptionConfirmation"},
    ),
    Case("unknown message Type", _changed(Type="Notice"), "no SNS HTTP(S) message type"),
    Case("raw message delivery (no signed envelope)", _raw_delivery, "no SNS HTTP(S) message type"),
    Case("a JSON name twice", _duplicate_name, "not JSON"),
    Case(
        "subscription confirmation for an unknown topic",
        _confirm_for(OTHER_TOPIC, lambda w: w.host.url(subscribe_query(OTHER_TOPIC))),
        "neither a Topic row",
    ),
    Case(
        "SubscribeURL on another host",
        _confirm_for(TOPIC_ARN, lambda w: f"https://evil.example.com{subscribe_query()}"),
        "SubscribeURL 'https://evil.example.com",
    ),
    Case(
        "SubscribeURL for another topic",
        _confirm_for(TOPIC_ARN, lambda w: w.host.url(subscribe_query(OTHER_TOPIC))),
        "not a ConfirmSubscription of topic",
    ),
    Case(
        "SubscribeURL with another action",
        _confirm_for(
            TOPIC_ARN,
            lambda w: w.host.url(subscribe_query().replace("ConfirmSubscription", "Unsubscribe")),
        ),
        "not a ConfirmSubscription of topic",
    ),
]


@pytest.mark.parametrize("case", REJECTED, ids=[c.id for c in REJECTED])
def test_every_unverified_message_is_refused_logged_and_runs_nothing(world, settings, caplog, case):
    settings.S3TASKS = {**settings.S3TASKS, **case.settings}
    document = case.build(world)

    with caplog.at_level(logging.WARNING, logger="s3tasks.sns"):
        response = post(document, **case.headers)

    assert response.status_code == 403
    assert response.content == b"Not a verified SNS message for a known topic.\n"
    assert case.reason in caplog.text
    assert CALLS == [] and not EventRecord.objects.exists() and not HandlerRun.objects.exists()
    assert not MessageFailure.objects.exists()
    assert not [g for g in world.host.gets if "ConfirmSubscription" in g]


def test_the_refusal_table_covers_every_pitfall_the_docs_list():
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "sns-endpoint.md").read_text()
    missing = [case.id for case in REJECTED if f"| {case.id} |" not in docs]
    assert missing == []


# --- settings and installation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"SNS_TOPIC_ARNS": TOPIC_ARN}, "must be a list"),
        ({"SNS_TOPIC_ARNS": ["uploads"]}, "SNS_TOPIC_ARNS"),
        ({"SNS_CERT_HOSTS": ["https://127.0.0.1:8443/"]}, "SNS_CERT_HOSTS"),
        ({"SNS_CA_BUNDLE": "/nonexistent/ca.pem"}, "not a file"),
        ({"SNS_MAX_MESSAGE_AGE": 3600}, "timedelta"),
        ({"SNS_FETCH_TIMEOUT": 0}, "above 0"),
        ({"SNS_SIGNATURE_VERSIONS": []}, "SNS_SIGNATURE_VERSIONS"),
        ({"SNS_SIGNATURE_VERSIONS": ["1", "3"]}, "SNS_SIGNATURE_VERSIONS"),
    ],
)
def test_wrong_sns_settings_say_what_to_write(raw, message):
    with pytest.raises(S3TasksConfigurationError, match=message):
        build_settings(raw)


def test_sns_settings_default_to_aws_hosts_the_system_store_and_an_hour():
    conf = build_settings({})

    assert (conf.SNS_CERT_HOSTS, conf.SNS_CA_BUNDLE, conf.SNS_TOPIC_ARNS) == ((), None, ())
    assert conf.SNS_MAX_MESSAGE_AGE == timedelta(hours=1)
    assert conf.SNS_SIGNATURE_VERSIONS == ("1", "2")


def test_the_endpoint_without_cryptography_names_the_sns_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "s3tasks.sns" or m.startswith("s3tasks.sns.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography.x509.verification", None)

    with pytest.raises(ImproperlyInstalled, match=r"pip install 's3tasks\[sns\]'") as caught:
        importlib.import_module("s3tasks.sns.views")

    assert (caught.value.missing_package, caught.value.install_extra) == ("cryptography", "sns")
