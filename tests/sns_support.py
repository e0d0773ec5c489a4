"""A small PKI, an HTTPS stub standing in for SNS' certificate host, and SNS messages signed
for real, for the SNS endpoint tests (tests/test_sns_endpoint*.py).

The text SNS signs is built here from AWS' documented field lists on purpose, independently of
`s3tasks.sns.messages`: a mistake there must not be mirrored by the tests.
"""

from __future__ import annotations

import base64
import http.server
import ipaddress
import json
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from s3tasks.testing import s3_notification, s3_record

ACCOUNT = "123456789012"
REGION = "us-east-1"
TOPIC = "uploads"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:{TOPIC}"
BUCKET = "sns-bucket"
NOW = datetime.now(UTC)

# AWS, "Verifying the signatures of Amazon SNS messages": the fields of the signed text.
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "s3tasks tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass
class Authority:
    """A CA (root or intermediate) that issues certificates."""

    name: str
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def root(cls, name: str = "s3tasks test root CA") -> Authority:
        key = _key()
        certificate = (
            _ca_builder(_name(name), key, key.public_key(), _name(name))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, certificate)

    def intermediate(self, name: str = "s3tasks test intermediate CA") -> Authority:
        key = _key()
        certificate = (
            _ca_builder(_name(name), key, key.public_key(), self.certificate.subject)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Authority(name, key, certificate)

    def issue(
        self,
        key: rsa.RSAPrivateKey,
        *,
        common_name: str = "sns.amazonaws.com",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        dns_names: tuple[str, ...] = ("sns.amazonaws.com",),
        ip_addresses: tuple[str, ...] = (),
        ca_issuers_url: str = "",
    ) -> x509.Certificate:
        """An end-entity certificate for `key` (a signing certificate, or a TLS server's)."""
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - timedelta(days=1))
            .not_valid_after(not_after or NOW + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        if ca_issuers_url:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(ca_issuers_url),
                        )
                    ]
                ),
                critical=False,
            )
        return builder.sign(self.key, hashes.SHA256())


def _ca_builder(
    subject: x509.Name, key: rsa.RSAPrivateKey, public_key: Any, issuer: x509.Name
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


# --- the HTTPS stub standing in for sns.<region>.amazonaws.com ----------------------------


@dataclass
class StubHost:
    """An HTTP(S) server on 127.0.0.1 serving fixed bodies; it records every GET."""

    tls: ssl.SSLContext | None = None
    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    gets: list[str] = field(default_factory=list)

    def start(self) -> StubHost:
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                stub.gets.append(self.path)
                status, body = stub.files.get(self.path.split("?")[0], (404, b"no such file"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{self.authority}{path}"

    def serve(self, path: str, body: bytes, status: int = 200) -> str:
        self.files[path] = (status, body)
        return self.url(path)


@dataclass
class SnsWorld:
    """A trusted root, the CA bundle file holding it, the certificate host, a signing key."""

    root: Authority
    bundle: Path
    host: StubHost
    signing_key: rsa.RSAPrivateKey
    signing_cert_url: str

    @classmethod
    def create(cls, directory: Path) -> SnsWorld:
        root = Authority.root()
        bundle = directory / "ca-bundle.pem"
        bundle.write_bytes(pem(root.certificate))
        server_key = _key()
        server_cert = root.issue(
            server_key,
            common_name="127.0.0.1",
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
        )
        (directory / "server.pem").write_bytes(
            pem(server_cert)
            + server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(directory / "server.pem")
        host = StubHost(tls=tls).start()
        signing_key = _key()
        url = host.serve("/SimpleNotificationService-good.pem", pem(root.issue(signing_key)))
        return cls(root, bundle, host, signing_key, url)

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The S3TASKS entries that make this world's host and root trusted."""
        return {
            "SNS_CERT_HOSTS": [self.host.authority],
            "SNS_CA_BUNDLE": str(self.bundle),
            **extra,
        }


# --- SNS messages --------------------------------------------------------------------------


def aws_time(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def signed_text(document: dict[str, Any]) -> bytes:
    names = NOTIFICATION_FIELDS if document["Type"] == "Notification" else CONFIRMATION_FIELDS
    return "".join(
        f"{name}\n{document[name]}\n" for name in names if document.get(name) is not None
    ).encode()


def sign(
    document: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "1", digest: str = ""
) -> dict[str, Any]:
    """`document` with SignatureVersion and a real Signature (`digest` overrides the hash
    the version implies, to make a mismatched message)."""
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}[digest or version]
    signature = key.sign(signed_text(document), padding.PKCS1v15(), algorithm)
    return {
        **document,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
    }


def notification(
    cert_url: str,
    *,
    key: str = "incoming/report.csv",
    topic_arn: str = TOPIC_ARN,
    timestamp: datetime | None = None,
    message: str | None = None,
    message_id: str | None = None,
    subject: str | None = "Amazon S3 Notification",
) -> dict[str, Any]:
    """An unsigned SNS Notification carrying one S3 upload of `key`."""
    record = s3_record(BUCKET, key, size=12, etag="abc", sequencer="00A1")
    document = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": topic_arn,
        "Message": message if message is not None else json.dumps(s3_notification(record)),
        "Timestamp": aws_time(timestamp or datetime.now(UTC)),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        document["Subject"] = subject
    return document


def confirmation(
    cert_url: str,
    subscribe_url: str,
    *,
    kind: str = "SubscriptionConfirmation",
    topic_arn: str = TOPIC_ARN,
) -> dict[str, Any]:
    """An unsigned SubscriptionConfirmation (or UnsubscribeConfirmation)."""
    return {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": "2336412f37fb687f5d51e6e2425c464de",
        "TopicArn": topic_arn,
        "Message": f"You have chosen to subscribe to the topic {topic_arn}.\nTo confirm it, "
        "visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url,
        "Timestamp": aws_time(datetime.now(UTC)),
        "SigningCertURL": cert_url,
    }


def subscribe_query(topic_arn: str = TOPIC_ARN) -> str:
    return (
        f"/?Action=ConfirmSubscription&TopicArn={topic_arn}&Token=2336412f37fb687f5d51e6e2425c464de"
    )


def new_key() -> rsa.RSAPrivateKey:
    return _key()
