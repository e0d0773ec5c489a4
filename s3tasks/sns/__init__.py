"""The SNS HTTP(S) endpoint: S3 events delivered by an SNS topic straight to Django, without
SQS, every message's signature verified first (docs/sns-endpoint.md).

Modules in data-flow order: `messages` (a POST body → `SnsMessage` and the text SNS signed),
`trusted_urls` (which SigningCertURL/SubscribeURL may be fetched), `fetch` (the one GET),
`certificates` (fetch, validity, chain, cache), `verification` (is this message genuine, fresh
and for a known topic), `confirmation` (visit SubscribeURL); `views` is the Django view that
wires them to the batch core the worker uses. Mount it with `include("s3tasks.urls")`.

Everything here needs the `cryptography` package: `pip install 's3tasks[sns]'`.
"""

from __future__ import annotations

from s3tasks.exceptions import ImproperlyInstalled

try:
    # X.509 path validation with custom extension policies: cryptography >= 45
    from cryptography.x509.verification import ExtensionPolicy  # noqa: F401
except ImportError as exc:
    raise ImproperlyInstalled("cryptography", "sns", "verifying SNS message signatures") from exc
