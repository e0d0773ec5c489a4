"""Which URLs in an SNS message s3tasks will fetch: SigningCertURL and SubscribeURL.

Only `https` on an SNS host: `sns.<region>.amazonaws.com` (`.amazonaws.com.cn` in China) on
the default port, or one of `S3TASKS["SNS_CERT_HOSTS"]` (`host` or `host:port`, for tests).
The URL is taken apart here and the request is built from the parts, so what was checked is
what is fetched: no user info (`https://sns.us-east-1.amazonaws.com@evil.com/`), no other
port, no backslash, space or non-ASCII character that parsers read differently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from s3tasks.exceptions import UnverifiedSnsMessage
from s3tasks.sns.messages import quote

AWS_SNS_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com(?:\.cn)?")
HTTPS_PORT = 443
_UNSAFE = re.compile(r"[\s\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class SnsUrl:
    """A checked URL on an SNS host, in the parts a request is built from."""

    host: str
    port: int
    target: str  # path and query, as sent in the request line
    path: str
    query: str

    def __str__(self) -> str:
        port = "" if self.port == HTTPS_PORT else f":{self.port}"
        return f"https://{self.host}{port}{self.target}"


def sns_url(url: str, *, what: str, extra_hosts: Sequence[str] = ()) -> SnsUrl:
    """`url` as an `SnsUrl`, or `UnverifiedSnsMessage` saying why it is not one."""
    if not url.isascii() or _UNSAFE.search(url):
        raise UnverifiedSnsMessage(f"{what} {quote(url)} holds characters no SNS URL has")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnverifiedSnsMessage(f"{what} {quote(url)} is no URL ({exc})") from exc
    if parts.scheme != "https":
        raise UnverifiedSnsMessage(f"{what} {quote(url)} is not https")
    if "@" in parts.netloc:
        raise UnverifiedSnsMessage(f"{what} {quote(url)} carries user info")
    host = parts.hostname or ""
    if not _allowed(host, port, extra_hosts):
        raise UnverifiedSnsMessage(
            f"{what} {quote(url)} is not on an SNS host (https://sns.<region>.amazonaws.com"
            + (f", or one of SNS_CERT_HOSTS {list(extra_hosts)}" if extra_hosts else "")
            + ")"
        )
    if parts.fragment:
        raise UnverifiedSnsMessage(f"{what} {quote(url)} has a fragment")
    path = parts.path or "/"
    target = path + (f"?{parts.query}" if parts.query else "")
    return SnsUrl(host, port or HTTPS_PORT, target, path, parts.query)


def _allowed(host: str, port: int | None, extra_hosts: Sequence[str]) -> bool:
    if AWS_SNS_HOST.fullmatch(host) and port in (None, HTTPS_PORT):
        return True
    allowed = {entry.lower() for entry in extra_hosts}
    authority = host if port is None else f"{host}:{port}"
    bare_default = port in (None, HTTPS_PORT) and host in allowed
    return bool(host) and (authority in allowed or bare_default)


def signing_cert_url(url: str, extra_hosts: Sequence[str] = ()) -> SnsUrl:
    """SigningCertURL: a `.pem` file on an SNS host, no query."""
    checked = sns_url(url, what="SigningCertURL", extra_hosts=extra_hosts)
    if checked.query or not checked.path.endswith(".pem"):
        raise UnverifiedSnsMessage(f"SigningCertURL {quote(url)} names no .pem file")
    return checked


def subscribe_url(url: str, topic_arn: str, extra_hosts: Sequence[str] = ()) -> SnsUrl:
    """SubscribeURL: SNS' ConfirmSubscription action for this very topic, with a token."""
    checked = sns_url(url, what="SubscribeURL", extra_hosts=extra_hosts)
    query = parse_qs(checked.query, keep_blank_values=True)
    if (
        checked.path != "/"
        or query.get("Action") != ["ConfirmSubscription"]
        or query.get("TopicArn") != [topic_arn]
        or len(query.get("Token", [])) != 1
        or not query["Token"][0]
    ):
        raise UnverifiedSnsMessage(
            f"SubscribeURL {quote(url)} is not a ConfirmSubscription of topic {topic_arn}"
        )
    return checked
