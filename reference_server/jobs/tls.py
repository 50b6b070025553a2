"""TLS for the jobs agent and its callers: contexts (TLS 1.2 or newer) and a development certificate.

harpd spoke TLS 1.0 only, and its callers never checked the certificate's host name
(reference/jobs.md, section 2.1, and defect 10). Here both sides require TLS 1.2 or newer,
and :func:`client_context` verifies the certificate and the host name unless told not to.

With no certificate configured, the agent makes a self-signed development certificate with
:func:`ensure_dev_certificate` (valid for ``localhost``, ``127.0.0.1`` and ``::1``); callers
trust it by giving the certificate file itself as their CA file.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runwire.runtime.files import write_atomically

__all__ = [
    "DEV_CERT_NAME",
    "DEV_KEY_NAME",
    "client_context",
    "ensure_dev_certificate",
    "server_context",
]

DEV_CERT_NAME: Final = "dev-cert.pem"
"""File name of the development certificate inside its folder."""

DEV_KEY_NAME: Final = "dev-key.pem"
"""File name of the development private key (mode 0600) inside its folder."""

DEV_VALIDITY: Final = datetime.timedelta(days=825)
"""How long a development certificate is valid."""

DEV_NAMES: Final = ("localhost",)
DEV_ADDRESSES: Final = ("127.0.0.1", "::1")


def server_context(
    certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None = None
) -> ssl.SSLContext:
    """A server TLS context: TLS 1.2 or newer, no client certificates.

    Args:
        certfile: PEM file with the certificate first, then any chain (harpd's
            ``network.certfile``).
        keyfile: PEM private key (default: inside ``certfile``).

    Raises:
        OSError, ssl.SSLError: the files cannot be read or do not match.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(os.fspath(certfile), None if keyfile is None else os.fspath(keyfile))
    return context


def client_context(
    ca_file: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> ssl.SSLContext:
    """A client TLS context for calling an agent: TLS 1.2 or newer.

    Args:
        ca_file: PEM file of the CA certificates to trust (for a development agent: its
            self-signed certificate). None: the system's default CAs.
        verify: check the certificate chain and the host name (the name given as
            ``server_hostname``, or the address connected to). False accepts any
            certificate, as harpd's callers did; use it only for testing.

    Raises:
        OSError, ssl.SSLError: ``ca_file`` cannot be read.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if ca_file is not None:
            context.load_verify_locations(cafile=os.fspath(ca_file))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _usable(certfile: Path, keyfile: Path) -> bool:
    """Both files exist, the certificate parses and is valid for at least a day more, and
    the key matches it."""
    try:
        certificate = x509.load_pem_x509_certificate(certfile.read_bytes())
        key = serialization.load_pem_private_key(keyfile.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc < now + datetime.timedelta(days=1):
        return False
    public = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ensure_dev_certificate(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The development certificate and key in ``directory``, made on first use.

    Reuses the files if they exist, match and stay valid for more than a day; otherwise
    writes a new self-signed certificate (ECDSA P-256, SHA-256, 825 days) for ``localhost``,
    ``127.0.0.1`` and ``::1``. The folder is created with mode 0700, the key written with
    mode 0600, both atomically.

    Returns:
        (certificate path, key path). Callers trust the agent with the certificate path as
        their CA file.

    Raises:
        OSError: the folder or files cannot be written.
    """
    folder = Path(directory)
    certfile, keyfile = folder / DEV_CERT_NAME, folder / DEV_KEY_NAME
    if _usable(certfile, keyfile):
        return certfile, keyfile
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "runwire development jobs agent"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    alternative_names: list[x509.GeneralName] = [x509.DNSName(n) for n in DEV_NAMES]
    alternative_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in DEV_ADDRESSES]
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + DEV_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        # Its own CA, so a caller can trust exactly this certificate as its CA file.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    write_atomically(
        keyfile,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    write_atomically(certfile, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return certfile, keyfile
