"""Backfill at the scale of billions of objects: S3 Batch Operations runs the handler.

- `write_manifest` lists the bucket once and streams a Batch Operations CSV manifest
  (`bucket,key`, keys URL-encoded as the format requires) to S3 by multipart upload, so memory
  stays flat whatever the bucket holds.
- `create_job_request` builds the `s3control.create_job` request (a pure function): a Lambda
  invoke operation (invocation schema 2.0) calling our Lambda entrypoint with the handler in
  `userArguments`, reading our CSV manifest, an S3 Inventory report's `manifest.json`, or —
  with no manifest at all — a manifest S3 generates itself from the prefix, suffix and
  creation dates (no listing by us). The job's IAM role is in docs/backfill.md.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from s3tasks.exceptions import BackfillError
from s3tasks.ops.backfill_objects import PAGE_SIZE, BackfillRequest, list_pages

CSV_FORMAT = "S3BatchOperations_CSV_20180820"
INVENTORY_FORMAT = "S3InventoryReport_CSV_20161130"
GENERATED_FORMAT = "S3InventoryReport_CSV_20211130"
REPORT_FORMAT = "Report_CSV_20180820"
PART_SIZE = 8 * 2**20  # bytes per uploaded part (S3's minimum is 5 MiB, except the last)
INVOCATION_SCHEMA = "2.0"  # the schema that carries userArguments


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, url: str, what: str = "location") -> S3Location:
        """`s3://bucket/key` → S3Location; a BackfillError for anything else."""
        if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
            raise BackfillError(f"the {what} must look like s3://bucket/key, not {url!r}")
        bucket, _, key = url[5:].partition("/")
        return cls(bucket, key)

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}/{self.key}" if self.key else self.bucket_arn

    @property
    def bucket_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    @property
    def is_inventory_manifest(self) -> bool:
        return self.key.endswith("manifest.json")


@dataclass(frozen=True)
class Manifest:
    """A manifest object in S3, and what it lists."""

    location: S3Location
    etag: str
    format: str = CSV_FORMAT
    rows: int | None = None  # unknown for an inventory report


def manifest_row(bucket: str, key: str) -> str:
    """One CSV line: the key URL-encoded (so commas, quotes and newlines cannot break it)."""
    return f"{bucket},{quote(key, safe='/')}\n"


def write_manifest(
    request: BackfillRequest,
    location: S3Location,
    *,
    s3: Any,
    wanted: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    page_size: int = PAGE_SIZE,
) -> Manifest:
    """List the request's objects and write their CSV manifest to `location`.

    `wanted` picks a page's objects (default: the request's filters); `progress` gets
    (objects listed, rows written) after each page.
    """
    if location.is_inventory_manifest:
        raise BackfillError(
            "a manifest.json key names an S3 Inventory report, which is read, never written; "
            "write the CSV manifest to a .csv key"
        )
    choose = wanted or (lambda page: [obj for obj in page if request.wants(obj)])
    upload = _MultipartUpload(s3, location)
    listed = rows = 0
    try:
        for page in list_pages(s3, request.bucket, request.prefix, "", page_size):
            listed += len(page)
            for obj in choose(page):
                upload.write(manifest_row(request.bucket, obj["Key"]).encode("utf-8"))
                rows += 1
            if progress is not None:
                progress(listed, rows)
        etag = upload.close()
    except BaseException:
        upload.abort()
        raise
    return Manifest(location, etag, CSV_FORMAT, rows)


class _MultipartUpload:
    """Bytes written to one S3 object part by part; one PutObject when they fit in one part."""

    def __init__(self, s3: Any, location: S3Location) -> None:
        self.s3, self.location = s3, location
        self.buffer = io.BytesIO()
        self.upload_id = ""
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.buffer.write(data)
        if self.buffer.tell() >= PART_SIZE:
            self._upload_part()

    def _upload_part(self) -> None:
        if not self.upload_id:
            self.upload_id = self.s3.create_multipart_upload(
                Bucket=self.location.bucket, Key=self.location.key, ContentType="text/csv"
            )["UploadId"]
        number = len(self.parts) + 1
        response = self.s3.upload_part(
            Bucket=self.location.bucket,
            Key=self.location.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=self.buffer.getvalue(),
        )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self.buffer = io.BytesIO()

    def close(self) -> str:
        """Finish the object; its ETag (without quotes)."""
        if not self.upload_id:
            response = self.s3.put_object(
                Bucket=self.location.bucket,
                Key=self.location.key,
                Body=self.buffer.getvalue(),
                ContentType="text/csv",
            )
            return response["ETag"].strip('"')
        if self.buffer.tell():
            self._upload_part()
        response = self.s3.complete_multipart_upload(
            Bucket=self.location.bucket,
            Key=self.location.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        return response["ETag"].strip('"')

    def abort(self) -> None:
        if self.upload_id:
            self.s3.abort_multipart_upload(
                Bucket=self.location.bucket, Key=self.location.key, UploadId=self.upload_id
            )


def existing_manifest(location: S3Location, *, s3: Any) -> Manifest:
    """A manifest already in S3 (an S3 Inventory report's manifest.json, or a CSV)."""
    try:
        head = s3.head_object(Bucket=location.bucket, Key=location.key)
    except s3.exceptions.ClientError as exc:
        raise BackfillError(
            f"cannot read the manifest s3://{location.bucket}/{location.key}: {exc}"
        ) from exc
    fmt = INVENTORY_FORMAT if location.is_inventory_manifest else CSV_FORMAT
    return Manifest(location, head["ETag"].strip('"'), fmt)


@dataclass(frozen=True)
class JobSpec:
    """What the Batch Operations job runs, as whom, and where its report goes."""

    handler: str
    function_arn: str
    role_arn: str
    account_id: str
    report: S3Location  # the completion report's bucket and prefix
    priority: int = 10
    report_scope: str = "AllTasks"  # or FailedTasksOnly


def create_job_request(
    spec: JobSpec, request: BackfillRequest, manifest: Manifest | None
) -> dict[str, Any]:
    """The `s3control.create_job` arguments (pure: tested without AWS)."""
    params: dict[str, Any] = {
        "AccountId": spec.account_id,
        "ConfirmationRequired": False,
        "Operation": {
            "LambdaInvoke": {
                "FunctionArn": spec.function_arn,
                "InvocationSchemaVersion": INVOCATION_SCHEMA,
                "UserArguments": {"handler": spec.handler},
            }
        },
        "Report": {
            "Bucket": spec.report.bucket_arn,
            "Format": REPORT_FORMAT,
            "Enabled": True,
            "ReportScope": spec.report_scope,
        },
        "Priority": spec.priority,
        "RoleArn": spec.role_arn,
        "Description": _description(spec, request),
    }
    if spec.report.key:
        params["Report"]["Prefix"] = spec.report.key.rstrip("/")
    if manifest is not None:
        spec_part: dict[str, Any] = {"Format": manifest.format}
        if manifest.format == CSV_FORMAT:
            spec_part["Fields"] = ["Bucket", "Key"]
        params["Manifest"] = {
            "Spec": spec_part,
            "Location": {"ObjectArn": manifest.location.arn, "ETag": manifest.etag},
        }
    else:
        params["ManifestGenerator"] = {"S3JobManifestGenerator": _generator(request)}
    params["ClientRequestToken"] = _token(params)
    return params


def _generator(request: BackfillRequest) -> dict[str, Any]:
    """S3 lists the bucket itself: prefix, suffix, and creation dates for --modified-*."""
    filters: dict[str, Any] = {}
    constraint = {}
    if request.prefix:
        constraint["MatchAnyPrefix"] = [request.prefix]
    if request.suffix:
        constraint["MatchAnySuffix"] = [request.suffix]
    if constraint:
        filters["KeyNameConstraint"] = constraint
    if request.modified_since is not None:
        filters["CreatedAfter"] = request.modified_since
    if request.modified_until is not None:
        filters["CreatedBefore"] = request.modified_until
    generator: dict[str, Any] = {
        "SourceBucket": f"arn:aws:s3:::{request.bucket}",
        "EnableManifestOutput": False,
    }
    if filters:
        generator["Filter"] = filters
    return generator


def _description(spec: JobSpec, request: BackfillRequest) -> str:
    text = f"s3tasks backfill of s3://{request.bucket}/{request.prefix} with {spec.handler}"
    return text[:256]


def _token(params: dict[str, Any]) -> str:
    """The same request gives the same token: S3 creates one job if the call is retried."""
    text = json.dumps(params, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:64]


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def create_job(s3control: Any, params: dict[str, Any]) -> str:
    """Create the Batch Operations job; its id."""
    try:
        return s3control.create_job(**params)["JobId"]
    except s3control.exceptions.ClientError as exc:
        raise BackfillError(f"S3 Batch Operations refused the job: {exc}") from exc
