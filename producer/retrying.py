"""The producer's one retry policy for a call to AWS (SQS, S3): `max_attempts` tries,
"full jitter" waits (a random wait up to the exponential bound, so that many producers
throttled together do not retry together), for the one exception that means "later"."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenacity import Retrying

    from .config import Config


def retrying(config: Config, later: type[BaseException]) -> Retrying:
    # Imported here, on the sender thread: tenacity pulls in asyncio, which a WSGI app
    # would otherwise pay for at import time.
    from tenacity import (
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        wait_random_exponential,
    )

    return Retrying(
        stop=stop_after_attempt(config.max_attempts),
        wait=wait_random_exponential(
            multiplier=config.retry_initial_seconds, max=config.retry_max_seconds
        ),
        retry=retry_if_exception_type(later),
        reraise=True,
    )


UNREACHABLE = "unreachable"  # no connection: the service is down for us
LATER = "later"  # the connection broke or timed out mid-call: worth another try


def transport_failure(exc: Exception) -> str | None:
    """What a failed AWS call means short of an answer (UNREACHABLE or LATER), or None
    when the service answered (a ClientError) or it is not botocore's (a fake client)."""
    if isinstance(exc, ConnectionError):
        return UNREACHABLE
    try:
        from botocore import exceptions as boto
    except ImportError:  # a fake client without botocore installed
        return None
    if isinstance(exc, boto.EndpointConnectionError | boto.ConnectTimeoutError):
        return UNREACHABLE
    if isinstance(exc, boto.ReadTimeoutError | boto.ConnectionClosedError | boto.HTTPClientError):
        return LATER
    return None
