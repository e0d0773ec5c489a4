"""The certificate that signed an SNS message: fetched from an SNS host, checked, cached.

Two things tie its key to AWS (docs/sns-endpoint.md, "Security model"):

1. Where it comes from: SigningCertURL passed `trusted_urls.signing_cert_url`, and the .pem
   is fetched over TLS verified against the system trust store (or `SNS_CA_BUNDLE`), the
   server's certificate naming that SNS host; no redirect is followed.
2. The certificate itself: inside its validity period now, and issued by a CA of that same
   trust store — through the intermediates the .pem holds or, when it holds only the leaf,
   the issuer its Authority Information Access names (fetched once, then verified by
   signature like any intermediate). Path validation is cryptography's (webpki rules for
   the CA certificates; the signing certificate's own extensions are not constrained, as AWS
   documents none).

The cache keeps what was fetched (leaf and intermediates), never a verdict: validity and the
chain are checked again for every message, against the current time.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from s3tasks.exceptions import (
    S3TasksConfigurationError,
    SnsVerificationUnavailable,
    UnverifiedSnsMessage,
)
from s3tasks.sns import fetch
from s3tasks.sns.trusted_urls import SnsUrl

MAX_PEM_BYTES = 64 * 1024  # a leaf and an intermediate or two: a few KiB
MAX_CHAIN_DEPTH = 4
CACHE_SIZE = 32  # SNS signs with one certificate per region at a time
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class SigningCertificate:
    """A fetched signing certificate and the intermediates that lead to a trust anchor."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class TrustAnchors:
    store: verification.Store
    subjects: frozenset[x509.Name]
    source: str  # where they were read from, for messages


_cache: OrderedDict[tuple[str, str | None], SigningCertificate] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every fetched certificate (tests; a rotated trust store)."""
    with _cache_lock:
        _cache.clear()
    trust_anchors.cache_clear()
    fetch.tls_context.cache_clear()


def signing_certificate(
    url: SnsUrl, *, now: datetime, ca_bundle: str | None, timeout: float
) -> x509.Certificate:
    """The certificate at `url`, valid at `now` and issued by a trusted CA; raises
    `UnverifiedSnsMessage` when it is not, `SnsVerificationUnavailable` when it cannot be
    fetched."""
    key = (str(url), ca_bundle)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
    if found is None:
        found = _fetch(url, ca_bundle=ca_bundle, timeout=timeout)
    check_validity(found.leaf, now, str(url))
    anchors = trust_anchors(ca_bundle)
    if found.intermediates == () and found.leaf.issuer not in anchors.subjects:
        found = SigningCertificate(found.leaf, (_issuer_from_aia(found.leaf, ca_bundle, timeout),))
    verify_chain(found, anchors, now, str(url))
    with _cache_lock:
        _cache[key] = found
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return found.leaf


def check_validity(certificate: x509.Certificate, now: datetime, where: str) -> None:
    if now < certificate.not_valid_before_utc:
        raise UnverifiedSnsMessage(
            f"the certificate at {where} is not valid before "
            f"{certificate.not_valid_before_utc.isoformat()}"
        )
    if now > certificate.not_valid_after_utc:
        raise UnverifiedSnsMessage(
            f"the certificate at {where} expired on {certificate.not_valid_after_utc.isoformat()}"
        )


def verify_chain(
    certificate: SigningCertificate, anchors: TrustAnchors, now: datetime, where: str
) -> None:
    """The leaf chains up to a trust anchor through the given intermediates, all valid now."""
    verifier = (
        verification.PolicyBuilder()
        .store(anchors.store)
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(certificate.leaf, list(certificate.intermediates))
    except (verification.VerificationError, ValueError) as exc:  # ValueError: unparsable
        raise UnverifiedSnsMessage(
            f"the certificate at {where} (issuer {certificate.leaf.issuer.rfc4514_string()}) "
            f"does not chain to a CA of {anchors.source}: {exc}"
        ) from exc


def _fetch(url: SnsUrl, *, ca_bundle: str | None, timeout: float) -> SigningCertificate:
    tls = fetch.tls_context(ca_bundle)
    status, body = fetch.get(
        url.host, url.port, url.target, timeout=timeout, limit=MAX_PEM_BYTES, tls=tls
    )
    if status >= 500 or status == 429:
        raise SnsVerificationUnavailable(f"{url} answered HTTP {status}")
    if status != 200:
        raise UnverifiedSnsMessage(f"{url} answered HTTP {status}, not the certificate")
    if len(body) > MAX_PEM_BYTES:
        raise UnverifiedSnsMessage(f"{url} sent more than {MAX_PEM_BYTES} bytes")
    certificates = _pem_certificates(body)
    if not certificates:
        raise UnverifiedSnsMessage(f"{url} sent no PEM certificate")
    return SigningCertificate(certificates[0], tuple(certificates[1:]))


def _pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM text that parses (a system bundle may hold odd ones)."""
    found = []
    for block in _PEM_BLOCK.findall(data):
        try:
            found.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            continue
    return found


def _issuer_from_aia(
    leaf: x509.Certificate, ca_bundle: str | None, timeout: float
) -> x509.Certificate:
    """The CA certificate the leaf's Authority Information Access names (`caIssuers`)."""
    try:
        access = leaf.extensions.get_extension_for_oid(
            ExtensionOID.AUTHORITY_INFORMATION_ACCESS
        ).value
    except x509.ExtensionNotFound:
        access = []
    except ValueError as exc:  # extensions that do not parse
        raise UnverifiedSnsMessage(f"the signing certificate's extensions are malformed: {exc}")
    urls = [
        d.access_location.value
        for d in access
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]
    if not urls:
        raise UnverifiedSnsMessage(
            f"the signing certificate's issuer ({leaf.issuer.rfc4514_string()}) is no trusted "
            "CA, and the certificate names no caIssuers URL to fetch it from"
        )
    parts = urlsplit(urls[0])
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise UnverifiedSnsMessage(f"caIssuers URL {urls[0][:80]!r} is not a plain http(s) URL")
    tls = fetch.tls_context(ca_bundle) if parts.scheme == "https" else None
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    status, body = fetch.get(
        parts.hostname, port, target, timeout=timeout, limit=MAX_PEM_BYTES, tls=tls
    )
    if status != 200 or len(body) > MAX_PEM_BYTES:
        raise SnsVerificationUnavailable(f"caIssuers URL {urls[0][:80]} answered HTTP {status}")
    try:
        return x509.load_der_x509_certificate(body)
    except ValueError:
        pem = _pem_certificates(body)
        if not pem:
            raise UnverifiedSnsMessage(f"caIssuers URL {urls[0][:80]} sent no certificate")
        return pem[0]


@lru_cache(maxsize=4)
def trust_anchors(ca_bundle: str | None) -> TrustAnchors:
    """The CA certificates of `ca_bundle`, or of the system trust store when it is None."""
    if ca_bundle:
        paths, source = [ca_bundle], f'S3TASKS["SNS_CA_BUNDLE"] ({ca_bundle})'
    else:
        paths, source = _system_store_files(), "the system trust store"
    certificates = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                certificates += _pem_certificates(file.read())
        except OSError:
            continue
    if not certificates:
        raise S3TasksConfigurationError(
            f"s3tasks found no CA certificate in {source} to verify SNS signing certificates; "
            'set S3TASKS["SNS_CA_BUNDLE"] to a PEM file of CA certificates (e.g. certifi.where()).'
        )
    return TrustAnchors(
        verification.Store(certificates), frozenset(c.subject for c in certificates), source
    )


def _system_store_files() -> list[str]:
    """The files OpenSSL reads CA certificates from (a bundle file, else a directory)."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        return [paths.cafile]
    if paths.capath and os.path.isdir(paths.capath):
        return sorted(
            os.path.join(paths.capath, name)
            for name in os.listdir(paths.capath)
            if name.endswith((".pem", ".crt")) or re.fullmatch(r"[0-9a-f]{8}\.\d+", name)
        )
    return []
