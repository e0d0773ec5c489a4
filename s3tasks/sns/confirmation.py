"""Confirm a subscription: visit the SubscribeURL of a verified SubscriptionConfirmation.

Only after the message itself was verified (its topic is one s3tasks knows), and only when
SubscribeURL is SNS' own ConfirmSubscription action for that same topic on an SNS host.
"""

from __future__ import annotations

from s3tasks.conf import get_settings
from s3tasks.exceptions import SnsVerificationUnavailable
from s3tasks.sns import fetch
from s3tasks.sns.messages import SnsMessage
from s3tasks.sns.trusted_urls import subscribe_url

MAX_RESPONSE_BYTES = 64 * 1024


def confirm_subscription(message: SnsMessage) -> None:
    """GET the message's SubscribeURL (its token stays out of logs).

    A SubscribeURL that is not SNS' raises `UnverifiedSnsMessage`; one SNS does not answer
    with 2xx raises `SnsVerificationUnavailable`, so the endpoint answers 503 and SNS sends
    the confirmation again.
    """
    settings = get_settings()
    url = subscribe_url(message.subscribe_url, message.topic_arn, settings.SNS_CERT_HOSTS)
    status, _ = fetch.get(
        url.host,
        url.port,
        url.target,
        timeout=settings.SNS_FETCH_TIMEOUT,
        limit=MAX_RESPONSE_BYTES,
        tls=fetch.tls_context(settings.SNS_CA_BUNDLE),
    )
    if not 200 <= status < 300:
        raise SnsVerificationUnavailable(
            f"ConfirmSubscription at {url.host} answered HTTP {status}"
        )
