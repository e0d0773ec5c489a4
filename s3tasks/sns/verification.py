"""Is an SNS message genuine, current and for a topic s3tasks knows? (docs/sns-endpoint.md)

The cheap checks run first, so a forged POST costs no fetch: the signature version, where the
certificate would come from, the topic, the timestamp; then the certificate (fetched once,
cached) and the RSA signature over the text SNS signed. Any failure raises
`UnverifiedSnsMessage` (the endpoint answers 403); a certificate that cannot be fetched right
now raises `SnsVerificationUnavailable` (503, so SNS retries).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.utils import timezone

from s3tasks.conf import get_settings
from s3tasks.exceptions import UnverifiedSnsMessage
from s3tasks.models import Topic
from s3tasks.sns.certificates import signing_certificate
from s3tasks.sns.messages import SnsMessage, quote
from s3tasks.sns.trusted_urls import signing_cert_url

# SignatureVersion → the hash SNS signs with (RSA PKCS#1 v1.5 either way)
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
# A Timestamp this far ahead of our clock is still accepted (clocks drift).
CLOCK_SKEW = timedelta(minutes=5)


def verify_message(message: SnsMessage, *, now: datetime | None = None) -> None:
    """Return when `message` is genuine, fresh and for a known topic; raise otherwise."""
    settings = get_settings()
    now = now or timezone.now()
    if message.signature_version not in settings.SNS_SIGNATURE_VERSIONS:
        raise UnverifiedSnsMessage(
            f"SignatureVersion {quote(message.signature_version)} is not accepted "
            f"(SNS_SIGNATURE_VERSIONS: {list(settings.SNS_SIGNATURE_VERSIONS)})"
        )
    url = signing_cert_url(message.signing_cert_url, settings.SNS_CERT_HOSTS)
    if not is_known_topic(message.topic_arn):
        raise UnverifiedSnsMessage(
            f"topic {quote(message.topic_arn)} is neither a Topic row's ARN nor in "
            'S3TASKS["SNS_TOPIC_ARNS"]'
        )
    check_fresh(message, now, settings.SNS_MAX_MESSAGE_AGE)
    certificate = signing_certificate(
        url, now=now, ca_bundle=settings.SNS_CA_BUNDLE, timeout=settings.SNS_FETCH_TIMEOUT
    )
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise UnverifiedSnsMessage(f"the certificate at {url} holds no RSA key")
    algorithm = HASHES[message.signature_version]()
    try:
        key.verify(message.signature, message.signed_text, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise UnverifiedSnsMessage(
            f"the Signature does not match the message (SignatureVersion "
            f"{message.signature_version}, certificate {url})"
        ) from None


def is_known_topic(topic_arn: str) -> bool:
    """A topic whose `Topic` row carries this ARN (sync fills it), or one the settings list."""
    if topic_arn in get_settings().SNS_TOPIC_ARNS:
        return True
    return Topic.objects.filter(arn=topic_arn).exists()


def check_fresh(message: SnsMessage, now: datetime, max_age: timedelta) -> None:
    """Refuse a replay: a Timestamp older than `max_age`, or too far ahead of our clock."""
    age = now - message.timestamp
    if age > max_age:
        raise UnverifiedSnsMessage(
            f"Timestamp {message.timestamp.isoformat()} is {age} old; SNS_MAX_MESSAGE_AGE is "
            f"{max_age}"
        )
    if -age > CLOCK_SKEW:
        raise UnverifiedSnsMessage(
            f"Timestamp {message.timestamp.isoformat()} is {-age} ahead of this server's clock"
        )
