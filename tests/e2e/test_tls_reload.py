"""TLS certificate rotation (`tls::reload_interval`, as upstream `configtls`): a collector's
OTLP/HTTP receiver serves a certificate, the files are replaced on disk as cert-manager does,
and new connections get the new certificate without a restart while a connection opened
before the rotation stays open and keeps being served."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import LOOPBACK, seed_config, wait_until
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from test_auth import finished_spans


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca_cert, ca_key, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert, cert_pem, key_pem


def write_atomically(path, data: bytes) -> None:
    """As a Secret update lands: the new file replaces the old in one rename."""
    tmp = path.with_suffix(path.suffix + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def post(conn: http.client.HTTPSConnection, body: bytes) -> int:
    conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
    response = conn.getresponse()
    response.read()
    return response.status


def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=5)
    try:
        conn.connect()
        return conn.sock.getpeercert(binary_form=True)
    finally:
        conn.close()


def test_a_rotated_certificate_is_served_without_restart_or_dropped_connection(
    backend, collector_factory, tmp_path
):
    old_ca, old_ca_key = make_ca("old-ca")
    new_ca, new_ca_key = make_ca("new-ca")
    old_cert, old_cert_pem, old_key_pem = issue(old_ca, old_ca_key, "receiver-old")
    new_cert, new_cert_pem, new_key_pem = issue(new_ca, new_ca_key, "receiver-new")
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(old_cert_pem)
    key_file.write_bytes(old_key_pem)

    overlay = tmp_path / "tls.yaml"
    overlay.write_text(
        f"""
receivers:
  otlp:
    protocols:
      http:
        tls:
          cert_file: {cert_file}
          key_file: {key_file}
          reload_interval: 1s
"""
    )
    collector = collector_factory(backend, configs=[seed_config(), overlay], sets=["processors::batch::timeout=200ms"])
    port = collector.ports.http

    context = ssl.create_default_context()
    for ca in (old_ca, new_ca):
        context.load_verify_locations(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    old_der = old_cert.public_bytes(serialization.Encoding.DER)
    new_der = new_cert.public_bytes(serialization.Encoding.DER)

    # A keep-alive connection made before the rotation.
    kept = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=10)
    assert post(kept, encode_spans(finished_spans("before-rotation")).SerializeToString()) == 200
    kept_socket = kept.sock
    assert kept_socket.getpeercert(binary_form=True) == old_der

    write_atomically(cert_file, new_cert_pem)
    write_atomically(key_file, new_key_pem)
    wait_until(
        lambda: served_certificate(port, context) == new_der,
        15,
        "new connections still get the old certificate after the files were replaced",
        interval=0.25,
    )

    # The old connection was not dropped: same socket, same session, still served.
    assert post(kept, encode_spans(finished_spans("after-rotation")).SerializeToString()) == 200
    assert kept.sock is kept_socket
    assert kept.sock.getpeercert(binary_form=True) == old_der
    kept.close()

    # A client that trusts only the new CA connects now; one trusting only the old does not.
    only_new = ssl.create_default_context(cadata=new_ca.public_bytes(serialization.Encoding.PEM).decode())
    assert served_certificate(port, only_new) == new_der
    only_old = ssl.create_default_context(cadata=old_ca.public_bytes(serialization.Encoding.PEM).decode())
    try:
        served_certificate(port, only_old)
        raise AssertionError("a client trusting only the old CA still connected")
    except ssl.SSLCertVerificationError:
        pass

    backend.wait_for_count(2, timeout=20)
    assert collector.is_running()
