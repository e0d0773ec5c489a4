"""EventBridge "Object ..." events from source aws.s3, mapped to S3 event names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3tasks.envelopes.fields import one_of, optional_str, parse_size, parse_time, required
from s3tasks.envelopes.shapes import MessageKind, ParsedMessage
from s3tasks.events import EventSource, S3Event

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
}
EVENTBRIDGE_DETAIL_TYPES = ("Object Created", "Object Deleted", *_FIXED_NAMES)


def parse_eventbridge(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """One EventBridge event: one `S3Event`, its key taken verbatim."""
    detail = required(document, "detail", where, Mapping)
    detail_where = f"{where}.detail"
    bucket = required(detail, "bucket", detail_where, Mapping)
    obj = required(detail, "object", detail_where, Mapping)
    object_where = f"{detail_where}.object"
    event = S3Event(
        bucket=required(bucket, "name", f"{detail_where}.bucket", str),
        # Not decoded: the S3 User Guide documents URL-encoding for the notification format
        # only, and real EventBridge events carry keys verbatim (e.g. ":" arrives as ":",
        # where a notification sends "%3A"), so decoding here would corrupt "+" and "%XX".
        key=required(obj, "key", object_where, str),
        event_name=_event_name(document, detail, where),
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
    return ParsedMessage(MessageKind.EVENTBRIDGE, (event,))


def _event_name(document: Mapping[str, Any], detail: Mapping[str, Any], where: str) -> str:
    detail_type = required(document, "detail-type", where, str)
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
