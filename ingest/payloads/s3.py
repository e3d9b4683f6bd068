"""The payload seam on S3, through boto3: the only place in the consumer that creates or
holds an S3 client (boto3's chain finds it: AWS_ENDPOINT_URL_S3, the region, roles).

Failures are classified by what S3 did: it answered that the object cannot be had (no
such key or bucket, access denied, too large, not text) -> PayloadRefused, a bad record;
it did not answer, or answered "later" (a 5xx, throttling, a read cut off) ->
PayloadUnavailable, an outage; no credentials -> PayloadUnavailable too, since a record
is never to blame for them (the log says what is missing)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from ingest.errors import ConfigError, PayloadUnavailable
from ingest.payloads.base import PayloadRefused, refused_size, refused_text
from producer.wire import PayloadPointer, SqsErrorKind, classify_sqs_error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# An object's text, read in pieces of this size: a read cut off fails fast.
_READ_CHUNK: Final = 1024 * 1024
_MISSING_CODES: Final = frozenset({"NoSuchKey", "NoSuchBucket", "404"})


def client(region: str | None = None, *, read_timeout: float = 30) -> S3Client:
    config = Config(
        max_pool_connections=16,
        retries={"mode": "standard", "total_max_attempts": 3},
        connect_timeout=5,
        read_timeout=read_timeout,
    )
    try:
        return boto3.session.Session().client("s3", region_name=region, config=config)
    except NoRegionError as exc:
        raise ConfigError(
            "no AWS region: set AWS_DEFAULT_REGION (boto3 ignores AWS_REGION) or pass --region"
        ) from exc


@contextlib.contextmanager
def calling(operation: str, pointer: PayloadPointer) -> Iterator[None]:
    """Translates boto3's failures of one S3 call into the seam's two kinds."""
    where = f"S3 {operation} of {pointer.url}"
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if classify_sqs_error(code, status) is SqsErrorKind.TRANSIENT:  # the same rule as SQS's
            raise PayloadUnavailable(f"{where}: {code}: {error.get('Message', '')}") from exc
        if code in _MISSING_CODES:
            raise PayloadRefused(f"payload {pointer.url} is missing ({code})") from exc
        hint = " (S3 answers so for a missing object without s3:ListBucket)" * (status == 403)
        raise PayloadRefused(f"{where} refused: {code}{hint}") from exc
    except BotoCoreError as exc:  # no answer, a read cut off, no credentials
        raise PayloadUnavailable(f"{where}: {exc}") from exc


class S3Payloads:
    """Payloads in S3. `bucket`: when set, pointers to other buckets are refused (a
    producer may not make the consumer read or delete objects elsewhere)."""

    def __init__(self, s3: S3Client, bucket: str | None = None) -> None:
        self._s3 = s3
        self._bucket = bucket

    def fetch(self, pointer: PayloadPointer, max_bytes: int) -> str:
        self._check_bucket(pointer)
        with calling("GetObject", pointer):
            found = self._s3.get_object(Bucket=pointer.bucket, Key=pointer.key)
            size = int(found.get("ContentLength", 0))
            if size > max_bytes:
                found["Body"].close()
                raise refused_size(pointer, size, max_bytes)
            with contextlib.closing(found["Body"]) as body:
                chunks = iter(lambda: body.read(_READ_CHUNK), b"")
                payload = b"".join(chunks)
        if len(payload) > max_bytes:
            raise refused_size(pointer, len(payload), max_bytes)
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            raise refused_text(pointer) from None

    def delete(self, pointer: PayloadPointer) -> None:
        self._check_bucket(pointer)
        with calling("DeleteObject", pointer):
            self._s3.delete_object(Bucket=pointer.bucket, Key=pointer.key)

    def create_bucket(self, bucket: str) -> bool:
        where = PayloadPointer(bucket, "")
        try:
            with calling("HeadBucket", where):
                self._s3.head_bucket(Bucket=bucket)
            return False
        except PayloadRefused:
            pass  # not there (or not ours to see): create it
        region = self._s3.meta.region_name
        try:
            with calling("CreateBucket", where):
                if region in (None, "us-east-1"):
                    self._s3.create_bucket(Bucket=bucket)
                else:
                    self._s3.create_bucket(
                        Bucket=bucket,
                        CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                    )
        except PayloadRefused as exc:
            raise ConfigError(f"cannot create the payload bucket {bucket!r}: {exc}") from exc
        return True

    def _check_bucket(self, pointer: PayloadPointer) -> None:
        if self._bucket is not None and pointer.bucket != self._bucket:
            raise PayloadRefused(
                f"payload {pointer.url} is not in the payload bucket {self._bucket!r} "
                "(INGEST_PAYLOAD_BUCKET)"
            )


def connect(region: str | None = None, bucket: str | None = None) -> S3Payloads:
    return S3Payloads(client(region), bucket)
