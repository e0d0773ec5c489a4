"""SNS HTTP(S) deliveries as values: the fields of a POST body and the exact text SNS signed.

Pure: nothing here fetches, trusts or runs anything. `read_message` refuses a body that is not
an SNS message of a known type with every signed field a string (`UnverifiedSnsMessage`);
whether the signature is genuine is `s3tasks.sns.verification`'s business.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from s3tasks.exceptions import UnverifiedSnsMessage

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# The fields SNS signs, per message type, in the order they appear in the signed text
# (AWS, "Verifying the signatures of Amazon SNS messages"); `Subject` only when present.
_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn")
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (*_CONFIRMATION_FIELDS, "Type"),
    UNSUBSCRIBE_CONFIRMATION: (*_CONFIRMATION_FIELDS, "Type"),
}
OPTIONAL_FIELDS = frozenset({"Subject"})
MAX_BODY_BYTES = 1024 * 1024  # SNS messages are at most 256 KiB; the envelope adds little
MAX_SIGNATURE_BYTES = 1024  # an RSA-4096 signature is 512 bytes


@dataclass(frozen=True)
class SnsMessage:
    """One POST from SNS, read but not yet verified."""

    type: str
    message_id: str
    topic_arn: str
    timestamp: datetime
    signature_version: str
    signature: bytes
    signing_cert_url: str
    signed_text: bytes  # what SNS signed, rebuilt from the body
    subscribe_url: str = ""
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def topic_name(self) -> str:
        return self.topic_arn.rsplit(":", 1)[-1]


def quote(value: Any, limit: int = 80) -> str:
    """A value from a request, safe and short enough for a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_message(body: bytes, *, header_type: str | None = None) -> SnsMessage:
    """The SNS message in a POST body; `header_type` is the `x-amz-sns-message-type` header,
    which must agree with the body when present."""
    if len(body) > MAX_BODY_BYTES:
        raise UnverifiedSnsMessage(f"the body has {len(body)} bytes; SNS sends far fewer")
    document = _json_object(body)
    message_type = document.get("Type")
    if message_type not in SIGNED_FIELDS:
        raise UnverifiedSnsMessage(f"Type {quote(message_type)} is no SNS HTTP(S) message type")
    if header_type is not None and header_type != message_type:
        raise UnverifiedSnsMessage(
            f"the x-amz-sns-message-type header {quote(header_type)} disagrees with Type "
            f"{message_type!r}"
        )
    for name in (*SIGNED_FIELDS[message_type], "SignatureVersion", "Signature", "SigningCertURL"):
        _string(document, name, optional=name in OPTIONAL_FIELDS)
    return SnsMessage(
        type=message_type,
        message_id=document["MessageId"],
        topic_arn=document["TopicArn"],
        timestamp=_timestamp(document["Timestamp"]),
        signature_version=document["SignatureVersion"],
        signature=_signature(document["Signature"]),
        signing_cert_url=document["SigningCertURL"],
        signed_text=signed_text(document),
        subscribe_url=document.get("SubscribeURL") or "",
        document=document,
    )


def signed_text(document: Mapping[str, Any]) -> bytes:
    """The text SNS signs for this message: `name\\nvalue\\n` for each signed field of its
    type, in order, values as decoded from the JSON (escapes turned back into characters)."""
    lines = []
    for name in SIGNED_FIELDS[document["Type"]]:
        value = document.get(name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode("utf-8")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UnverifiedSnsMessage(f"the body is not JSON text ({type(exc).__name__})") from exc
    if not isinstance(document, dict):
        raise UnverifiedSnsMessage(f"the body is a JSON {type(document).__name__}, not an object")
    return document


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose names are unique: with a name twice, which value was signed and
    which would be used could differ."""
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("a name appears twice in one JSON object")
    return document


def _string(document: Mapping[str, Any], name: str, *, optional: bool = False) -> None:
    value = document.get(name)
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise UnverifiedSnsMessage(f"{name} is {quote(value)}, not a non-empty string")


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise UnverifiedSnsMessage(f"Timestamp {quote(text)} is no ISO 8601 time with a zone")
    return moment


def _signature(text: str) -> bytes:
    try:
        signature = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise UnverifiedSnsMessage("Signature is not base64") from exc
    if not 0 < len(signature) <= MAX_SIGNATURE_BYTES:
        raise UnverifiedSnsMessage(f"Signature has {len(signature)} bytes")
    return signature
