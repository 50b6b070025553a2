"""Tests of runwire.reference_server.jobs.tls: contexts and the development certificate."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from runwire.reference_server.jobs.tls import (
    DEV_CERT_NAME,
    DEV_KEY_NAME,
    client_context,
    ensure_dev_certificate,
    server_context,
)

WAIT_S = 10.0


def test_dev_certificate_is_made_once_and_reused(tmp_path: Path) -> None:
    folder = tmp_path / "agent"
    certfile, keyfile = ensure_dev_certificate(folder)
    assert (certfile, keyfile) == (folder / DEV_CERT_NAME, folder / DEV_KEY_NAME)
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    first = certfile.read_bytes(), keyfile.read_bytes()
    assert ensure_dev_certificate(folder) == (certfile, keyfile)
    assert (certfile.read_bytes(), keyfile.read_bytes()) == first


def test_dev_certificate_names(tmp_path: Path) -> None:
    certfile, _ = ensure_dev_certificate(tmp_path)
    certificate = x509.load_pem_x509_certificate(certfile.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_dev_certificate_is_replaced_when_it_does_not_match_its_key(tmp_path: Path) -> None:
    certfile, keyfile = ensure_dev_certificate(tmp_path)
    other = tmp_path / "other"
    _, other_key = ensure_dev_certificate(other)
    keyfile.write_bytes(other_key.read_bytes())
    old = certfile.read_bytes()
    ensure_dev_certificate(tmp_path)
    assert certfile.read_bytes() != old
    server_context(certfile, keyfile)  # the pair matches again


def test_contexts_require_tls_1_2(tmp_path: Path) -> None:
    certfile, keyfile = ensure_dev_certificate(tmp_path)
    assert server_context(certfile, keyfile).minimum_version == ssl.TLSVersion.TLSv1_2
    verifying = client_context(certfile)
    assert verifying.minimum_version == ssl.TLSVersion.TLSv1_2
    assert verifying.check_hostname and verifying.verify_mode == ssl.CERT_REQUIRED
    trusting = client_context(verify=False)
    assert not trusting.check_hostname and trusting.verify_mode == ssl.CERT_NONE


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> str | None:
    """TLS version negotiated between the two contexts over loopback."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def accept() -> None:
        connection, _ = listener.accept()
        connection.settimeout(WAIT_S)
        try:
            with server.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw,
            client.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            version = tls.version()
            tls.sendall(b"x")
            return version
    finally:
        thread.join(WAIT_S)
        listener.close()


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_a_verifying_client_trusts_the_dev_certificate(tmp_path: Path, name: str) -> None:
    certfile, keyfile = ensure_dev_certificate(tmp_path)
    version = _handshake(server_context(certfile, keyfile), client_context(certfile), name)
    assert version in ("TLSv1.2", "TLSv1.3")


def test_a_strict_default_context_trusts_the_dev_certificate(tmp_path: Path) -> None:
    """What ssl.create_default_context does on Python 3.13+ (strict X.509 checks)."""
    certfile, keyfile = ensure_dev_certificate(tmp_path)
    client = ssl.create_default_context(cafile=str(certfile))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    assert _handshake(server_context(certfile, keyfile), client, "localhost")


def test_the_host_name_is_checked(tmp_path: Path) -> None:
    certfile, keyfile = ensure_dev_certificate(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_context(certfile, keyfile), client_context(certfile), "example.com")
    assert _handshake(
        server_context(certfile, keyfile), client_context(verify=False), "example.com"
    )


def test_an_unknown_certificate_is_refused(tmp_path: Path) -> None:
    certfile, keyfile = ensure_dev_certificate(tmp_path / "one")
    other, _ = ensure_dev_certificate(tmp_path / "two")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_context(certfile, keyfile), client_context(other), "localhost")
