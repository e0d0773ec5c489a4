"""EventBridge "Object ..." events from source aws.s3, mapped to S3 event names.

Keys are taken verbatim unless `S3TASKS["EVENTBRIDGE_KEYS"]` says they are URL-encoded
(docs/configuration.md has the evidence for each reading). CloudTrail API-call events share
the `aws.s3` source but are no S3 event notification; they are refused with what to set up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3tasks.conf import get_settings
from s3tasks.envelopes.fields import (
    excerpt,
    one_of,
    optional_str,
    parse_size,
    parse_time,
    required,
)
from s3tasks.envelopes.limits import checked_event
from s3tasks.envelopes.s3 import decode_key
from s3tasks.envelopes.shapes import MessageKind, ParsedMessage
from s3tasks.events import EventSource, S3Event
from s3tasks.exceptions import MalformedMessage

# EventBridge detail-type (+ reason / deletion-type) -> S3 event-name form, as mapped in
# the S3 User Guide's "Amazon EventBridge mapping and troubleshooting" table.
_CREATED_REASONS = {
    "PutObject": "ObjectCreated:Put",
    "POST Object": "ObjectCreated:Post",
    "PostObject": "ObjectCreated:Post",
    "CopyObject": "ObjectCreated:Copy",
    "CompleteMultipartUpload": "ObjectCreated:CompleteMultipartUpload",
}
_DELETED_REASONS = {
    "DeleteObject": "ObjectRemoved",
    "Lifecycle Expiration": "LifecycleExpiration",
}
_DELETION_TYPES = {
    "Permanently Deleted": "Delete",
    "Delete Marker Created": "DeleteMarkerCreated",
}
_FIXED_NAMES = {
    "Object Restore Initiated": "ObjectRestore:Post",
    "Object Restore Completed": "ObjectRestore:Completed",
    "Object Restore Expired": "ObjectRestore:Delete",
    "Object Storage Class Changed": "LifecycleTransition",
    "Object Access Tier Changed": "IntelligentTiering",
    "Object Tags Added": "ObjectTagging:Put",
    "Object Tags Deleted": "ObjectTagging:Delete",
    "Object ACL Updated": "ObjectAcl:Put",
    # Listed in the EventBridge events reference (events-ref-s3) without an example; read as
    # the finished copy of an object, with the "Object Created" detail shape.
    "Async Copy Completion": "ObjectCreated:Copy",
}
EVENTBRIDGE_DETAIL_TYPES = ("Object Created", "Object Deleted", *_FIXED_NAMES)
# What CloudTrail delivers for S3 API calls (data events); AWS's China docs say "Amazon".
CLOUDTRAIL_DETAIL_TYPES = ("AWS API Call via CloudTrail", "Amazon API Call via CloudTrail")


def parse_eventbridge(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """One EventBridge event: one `S3Event`."""
    event_name = _event_name(document, where)
    detail = required(document, "detail", where, Mapping)
    detail_where = f"{where}.detail"
    bucket = required(detail, "bucket", detail_where, Mapping)
    obj = required(detail, "object", detail_where, Mapping)
    object_where = f"{detail_where}.object"
    event = S3Event(
        bucket=required(bucket, "name", f"{detail_where}.bucket", str),
        key=_key(required(obj, "key", object_where, str), f"{object_where}.key"),
        event_name=event_name,
        event_time=parse_time(document.get("time"), f"{where}.time"),
        size=parse_size(obj.get("size"), f"{object_where}.size"),
        # AWS spells it "etag"; moto's EventBridge emulation spells it "eTag".
        etag=optional_str(obj, "etag", object_where) or optional_str(obj, "eTag", object_where),
        version_id=optional_str(obj, "version-id", object_where),
        sequencer=optional_str(obj, "sequencer", object_where),
        region=optional_str(document, "region", where),
        source=EventSource.EVENTBRIDGE,
        raw=dict(document),
    )
    return ParsedMessage(MessageKind.EVENTBRIDGE, (checked_event(event, where),))


def _key(key: str, where: str) -> str:
    """The object key, URL-decoded only when `S3TASKS["EVENTBRIDGE_KEYS"]` says it is encoded."""
    if get_settings().EVENTBRIDGE_KEYS == "url-encoded":
        return decode_key(key, where)
    return key


def _event_name(document: Mapping[str, Any], where: str) -> str:
    detail_type = required(document, "detail-type", where, str)
    if detail_type in CLOUDTRAIL_DETAIL_TYPES:
        raise MalformedMessage(_cloudtrail_hint(document, where))
    detail = required(document, "detail", where, Mapping)
    reason_where, deletion_where = f"{where}.detail.reason", f"{where}.detail.deletion-type"
    if detail_type == "Object Created":
        reason = one_of(detail.get("reason"), _CREATED_REASONS, reason_where)
        return _CREATED_REASONS[reason]
    if detail_type == "Object Deleted":
        reason = one_of(detail.get("reason"), _DELETED_REASONS, reason_where)
        deletion = one_of(detail.get("deletion-type"), _DELETION_TYPES, deletion_where)
        return f"{_DELETED_REASONS[reason]}:{_DELETION_TYPES[deletion]}"
    one_of(detail_type, EVENTBRIDGE_DETAIL_TYPES, f"{where}.detail-type")
    return _FIXED_NAMES[detail_type]


def _cloudtrail_hint(document: Mapping[str, Any], where: str) -> str:
    detail = document.get("detail")
    call = detail.get("eventName") if isinstance(detail, Mapping) else None
    return (
        f"{where}: a CloudTrail API-call event ({excerpt(document['detail-type'])}, "
        f"eventName {excerpt(call)}), not an S3 event notification. s3tasks reads S3's own "
        "EventBridge events: turn on EventBridge for the bucket (Bucket.eventbridge_enabled, "
        "then `manage.py sync_notifications`) and match detail-type 'Object Created' / "
        "'Object Deleted' in the rule instead of 'AWS API Call via CloudTrail'; or send the "
        "bucket's notifications to an SQS queue or SNS topic."
    )
