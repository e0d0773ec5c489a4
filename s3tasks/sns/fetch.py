"""GET a checked URL with a timeout, a size limit and no redirects (the thin I/O edge).

The request is built from the parts `trusted_urls` checked, on a connection to exactly that
host and port; for https the server's certificate is verified against the system trust store,
or against `S3TASKS["SNS_CA_BUNDLE"]` when set, and must name that host.
"""

from __future__ import annotations

import http.client
import ssl
from functools import lru_cache

from s3tasks.exceptions import SnsVerificationUnavailable

USER_AGENT = "s3tasks-sns-endpoint"


@lru_cache(maxsize=4)
def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verify servers against `ca_bundle` alone, or the system store when it is None."""
    return ssl.create_default_context(cafile=ca_bundle)


def get(
    host: str,
    port: int,
    target: str,
    *,
    timeout: float,
    limit: int,
    tls: ssl.SSLContext | None,
) -> tuple[int, bytes]:
    """The status and at most `limit + 1` bytes of the body (so a caller can tell "too big").

    `tls=None` is plain HTTP (only for a CA certificate named by a certificate's Authority
    Information Access, which is then verified by signature, not by where it came from).
    Anything that keeps the server from answering — DNS, connection, timeout, TLS — raises
    `SnsVerificationUnavailable`: a genuine message must be retried, not refused.
    """
    if tls is None:
        connection: http.client.HTTPConnection = http.client.HTTPConnection(
            host, port, timeout=timeout
        )
    else:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    try:
        connection.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
        response = connection.getresponse()
        return response.status, response.read(limit + 1)
    except ssl.SSLCertVerificationError as exc:
        raise SnsVerificationUnavailable(
            f"the TLS certificate of {host}:{port} is not trusted ({exc.verify_message}); check "
            'the system trust store, or S3TASKS["SNS_CA_BUNDLE"]'
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise SnsVerificationUnavailable(
            f"GET {'https' if tls else 'http'}://{host}:{port}{target[:80]} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        connection.close()
