"""Cache files as objects in an S3 bucket (AWS S3 or any S3-compatible store), via boto3.

Never torn: an object is written by one PUT of the whole document, and S3 makes an object
visible only once all of it is stored, so a reader gets the old object or the new one.

Only forward: each object's metadata records its `watermark` (and `schema-version`). A write
reads the current object's ETag and watermark (HEAD), refuses when that watermark is newer,
and otherwise PUTs with `If-Match: <that ETag>` (`If-None-Match: *` when there was no object).
S3 evaluates the condition atomically with the write, so when another writer got in between,
the PUT fails with 412 (or 409, or 404 when the object went away) and the writer reads again
and compares again. The last writer to win is therefore never older than what it replaced.

A removal is a write too: a small tombstone object, `{"removed": true, "watermark": "W"}` with
`removed` in its metadata, takes the file's place, so a slower writer holding an older snapshot
cannot bring the file back (the local store keeps the same record in its lock file). Readers
treat a tombstone as no file. Its body holds the watermark so that two tombstones never share
an ETag (an `If-Match` on one must not succeed against another).

Credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, an IAM role); the endpoint from `CRM_CACHE_S3_ENDPOINT_URL`, else boto3's own
(AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), else AWS. Errors name the store and the kind of
failure (`StoreUnavailable`), never a credential.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from crm_pipeline.cache.stores.base import (
    Fetched,
    ObjectRef,
    Outcome,
    Signature,
    Store,
    StoreUnavailable,
    watermark_of,
)
from crm_pipeline.cachefile import dumps

# A writer that keeps losing the race re-reads this often before giving up; each lost round
# means another writer published, so this is only reached under a pathological stampede.
MAX_ATTEMPTS = 50
# A tombstone is at most this long (its watermark is a 64-bit number); every document is longer
# (its envelope alone is), so a listing can skip tombstones by size without reading them.
TOMBSTONE_MAX_BYTES = 64
# Reads on the API's hot path must fail fast when the store is unreachable: the API then serves
# the copy it holds. botocore retries throttling and 5xx answers within `max_attempts`.
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 10.0
MAX_HTTP_ATTEMPTS = 3


class _Conflict(Exception):
    """A conditional write lost: the object changed since it was read."""


class _NotModified(Exception):
    """A conditional read: the object still has the ETag given."""


class _Missing(Exception):
    """No such object."""


@dataclass(frozen=True)
class _Head:
    etag: str
    watermark: int | None
    removed: bool


def new_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client with short timeouts (`endpoint_url` None: boto3's own resolution)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": MAX_HTTP_ATTEMPTS},
    )
    # A session of our own: boto3's default session is not safe to share between threads.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


class S3Store(Store):
    """Cache files under `s3://bucket/prefix`."""

    remote = True

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = client if client is not None else new_client()

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def key(self, relative: str) -> str:
        """The object key of `relative`."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def file(self, relative: str) -> ObjectRef:
        return ObjectRef(self, relative)

    def where(self, relative: str) -> str:
        return f"{self.url}/{relative}"

    # -- writes -------------------------------------------------------------------------------

    def publish_document(self, relative: str, document: dict[str, Any]) -> Outcome:
        watermark = int(document["watermark"])
        metadata = {"watermark": str(watermark), "schema-version": str(document["schema_version"])}
        body = dumps(document)
        written, current = self._put_forward(relative, watermark, body, metadata)
        before = None if current is None or current.watermark is None else str(current.watermark)
        size = len(body) if written else 0
        return Outcome(self.where(relative), written, size, str(watermark), before)

    def update_document(
        self, relative: str, merge: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> Outcome:
        """Read the object (body and ETag), merge, PUT on that ETag; on a lost race, again."""
        key = self.key(relative)
        for _ in range(MAX_ATTEMPTS):
            current, etag, published = self._current(key)
            document = merge(current)
            watermark = int(document["watermark"])
            before = None if published is None else str(published)
            if published is not None and watermark < published:
                return Outcome(self.where(relative), False, 0, str(watermark), before)
            body = dumps(document)
            metadata = {
                "watermark": str(watermark),
                "schema-version": str(document["schema_version"]),
            }
            if not self._put_if_unchanged(key, body, metadata, etag):
                continue  # another writer got in between: read and merge again
            return Outcome(self.where(relative), True, len(body), str(watermark), before)
        raise StoreUnavailable(
            f"cache store {self.url}: {relative} still contended after {MAX_ATTEMPTS} attempts"
        )

    def _current(self, key: str) -> tuple[dict[str, Any] | None, str | None, int | None]:
        """The object's document (None: no object, a tombstone, or not a JSON object), its
        ETag (None: no object) and its watermark."""
        try:
            response = self._call("get_object", Bucket=self.bucket, Key=key)
        except _Missing:
            return None, None, None
        with response["Body"] as stream:
            body = self._read(stream)
        metadata = response.get("Metadata") or {}
        recorded = str(metadata.get("watermark", ""))
        watermark = int(recorded) if recorded.isdigit() else watermark_of(body)
        if metadata.get("removed") == "true":
            return None, response["ETag"], watermark
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        return (document if isinstance(document, dict) else None), response["ETag"], watermark

    def remove(self, relative: str, watermark: str) -> bool:
        w = int(watermark)
        body = orjson.dumps({"removed": True, "watermark": str(w)})
        metadata = {"watermark": str(w), "removed": "true"}
        # Recorded even when there is no object, as the local store records it in its lock file.
        written, current = self._put_forward(relative, w, body, metadata)
        return written and current is not None and not current.removed

    def _put_forward(
        self, relative: str, watermark: int, body: bytes, metadata: dict[str, str]
    ) -> tuple[bool, _Head | None]:
        """PUT `body` unless a newer watermark is published: (written, what it replaced or
        what refused it)."""
        key = self.key(relative)
        for _ in range(MAX_ATTEMPTS):
            current = self._head(key)
            compared = current is not None and current.watermark is not None
            if compared and watermark < current.watermark:
                return False, current
            if not self._put_if_unchanged(key, body, metadata, current and current.etag):
                continue  # another writer got in between: read again, compare again
            return True, current
        raise StoreUnavailable(
            f"cache store {self.url}: {relative} still contended after {MAX_ATTEMPTS} attempts"
        )

    def _put_if_unchanged(
        self, key: str, body: bytes, metadata: dict[str, str], etag: str | None
    ) -> bool:
        """PUT `body` only if the object still has `etag` (None: only if there is no object);
        False when another writer got in between."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self._call(
                "put_object",
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                Metadata=metadata,
                **condition,
            )
        except (_Conflict, _Missing):
            return False
        return True

    def _head(self, key: str) -> _Head | None:
        try:
            head = self._call("head_object", Bucket=self.bucket, Key=key)
        except _Missing:
            return None
        metadata = head.get("Metadata") or {}
        recorded = str(metadata.get("watermark", ""))
        if recorded.isdigit():
            watermark: int | None = int(recorded)
        else:  # written by something else: compare by the document's own watermark
            fetched = self._get(key, None)
            watermark = None if fetched is None else watermark_of(fetched[0] or b"")
        return _Head(head["ETag"], watermark, metadata.get("removed") == "true")

    # -- reads --------------------------------------------------------------------------------

    def fetch(self, relative: str, known: Signature | None = None) -> Fetched | None:
        """A hit on an unchanged object is one conditional GET answered 304, with no body."""
        got = self._get(self.key(relative), known)
        if got is None:
            return None
        body, etag = got
        return Fetched(body, etag)

    def _get(self, key: str, known: Signature | None) -> tuple[bytes | None, str] | None:
        condition = {"IfNoneMatch": known} if isinstance(known, str) else {}
        try:
            response = self._call("get_object", Bucket=self.bucket, Key=key, **condition)
        except _NotModified:
            return None, str(known)
        except _Missing:
            return None
        with response["Body"] as stream:
            body = self._read(stream)
        if (response.get("Metadata") or {}).get("removed") == "true":
            return None  # a tombstone: the file was removed
        return body, response["ETag"]

    def _read(self, stream: Any) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            return stream.read()
        except BotoCoreError as exc:  # the connection broke mid-body
            kind = type(exc).__name__
            raise StoreUnavailable(f"cache store {self.url} unreachable ({kind})") from None

    def names(self, folder: str) -> list[str]:
        prefix = self.key(folder.strip("/")) + "/"
        names = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(prefix) :]
                    if name.endswith(".json") and item["Size"] > TOMBSTONE_MAX_BYTES:
                        names.append(name)
        except Exception as exc:
            raise self._translate(exc, "list_objects_v2") from None
        return sorted(names)

    # -- errors -------------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, operation)(**kwargs)
        except Exception as exc:
            raise self._translate(exc, operation) from None

    def _translate(self, exc: Exception, operation: str) -> Exception:
        """Our exception for a boto3 one: conflicts, 304 and 404 for the callers above, and
        StoreUnavailable (the store and the error code only) for the rest."""
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            error = exc.response.get("Error") or {}
            code = str(error.get("Code", ""))
            status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return _Conflict()
            if status == 304 or code in ("304", "NotModified"):
                return _NotModified()
            if status == 404 and code in ("404", "NoSuchKey", "NotFound"):
                return _Missing()
            return StoreUnavailable(f"cache store {self.url}: {operation} refused ({code})")
        if isinstance(exc, BotoCoreError):
            kind = type(exc).__name__
            return StoreUnavailable(f"cache store {self.url} unreachable ({kind})")
        return exc
