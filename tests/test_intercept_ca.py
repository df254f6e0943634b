"""prompttap's local CA (HTTPS interception): name constraints that OpenSSL enforces, leaves that pass
a real TLS handshake, a key only its owner can read, re-issue when the host list changes, and the
bundle clients get. Verification is done by the ``openssl`` command and Python's ssl module, never
by prompttap's own code."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from prompttap.collector.intercept.ca import CA_KEY, LocalCA
from prompttap.collector.intercept.hosts import BUILTIN_HOSTS
from tests.harness import ROOT

HOSTS = ["api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"]


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def count_certs(data: bytes) -> int:
    return data.count(b"-----BEGIN CERTIFICATE-----")


def openssl_verify(ca_file: Path, cert_pem: bytes, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    leaf = tmp_path / f"leaf-{os.urandom(4).hex()}.pem"
    leaf.write_bytes(cert_pem)
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca_file), "-purpose", "sslserver", *extra, str(leaf)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextmanager
def tls_server(context: ssl.SSLContext, body: bytes = b"ok") -> Iterator[tuple[int, list[object]]]:
    """A loopback server doing real TLS handshakes with ``context``; each connection gets one HTTP
    response. Yields the port and a list of what each handshake gave: (TLS version, ALPN) or the error."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    seen: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    seen.append((tls.version(), tls.selected_alpn_protocol()))
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
                    tls.sendall(head + body)
            except (ssl.SSLError, OSError) as exc:
                seen.append(exc)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def handshake(port: int, server_hostname: str, client: ssl.SSLContext) -> tuple[str | None, str | None]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        tls.recv(4096)
        return tls.version(), tls.selected_alpn_protocol()


def forged(ca_dir: Path, common_name: str, sans: list[x509.GeneralName] | None, *, ca: bool = False) -> bytes:
    """What a thief holding the CA key would sign: a certificate with the given names, signed with
    the key read from disk, built the way a valid leaf is (so only the names can make it fail)."""
    ca_key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "prompttap-ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return pem(builder.sign(ca_key, hashes.SHA256()))


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA.load_or_create(tmp_path / "ca", HOSTS)


def test_name_constraints_are_critical_and_list_exactly_the_hosts(ca: LocalCA):
    cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    assert sorted(n.value for n in ext.value.permitted_subtrees) == sorted(HOSTS)
    assert all(isinstance(n, x509.DNSName) for n in ext.value.permitted_subtrees)
    assert {n.value for n in ext.value.excluded_subtrees} == {
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    }
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ca.hosts == tuple(sorted(HOSTS))
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(ca.cert_path)], capture_output=True, text=True, check=True
    ).stdout
    assert "X509v3 Name Constraints: critical" in text


def test_builtin_hosts_make_a_valid_ca(tmp_path: Path):
    ca = LocalCA.load_or_create(tmp_path / "ca", BUILTIN_HOSTS)
    assert set(ca.hosts) == set(BUILTIN_HOSTS) and len(BUILTIN_HOSTS) >= 11
    for host in BUILTIN_HOSTS:
        cert, _ = ca.issue_leaf(host)
        result = openssl_verify(ca.cert_path, pem(cert), tmp_path, "-verify_hostname", host)
        assert result.returncode == 0, (host, result.stderr)


@pytest.mark.parametrize("host", HOSTS)
def test_a_leaf_for_an_intercepted_host_verifies_with_openssl(ca: LocalCA, tmp_path: Path, host: str):
    cert, _ = ca.issue_leaf(host)
    result = openssl_verify(ca.cert_path, pem(cert), tmp_path, "-verify_hostname", host)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stderr
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [host]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=32)
    # The leaf is for its host only.
    other = openssl_verify(ca.cert_path, pem(cert), tmp_path, "-verify_hostname", "api.openai.com.evil.example")
    assert other.returncode != 0


@pytest.mark.parametrize(
    ("common_name", "sans", "error"),
    [
        ("www.example.com", [x509.DNSName("www.example.com")], "permitted subtree violation"),
        ("accounts.google.com", [x509.DNSName("accounts.google.com")], "permitted subtree violation"),
        ("openai.com", [x509.DNSName("openai.com")], "permitted subtree violation"),  # the parent domain
        ("evil", [x509.DNSName("api.openai.com.evil.example")], "permitted subtree violation"),
        ("two", [x509.DNSName("api.openai.com"), x509.DNSName("www.bank.example")], "permitted subtree violation"),
        ("ip", [x509.IPAddress(ipaddress.ip_address("93.184.216.34"))], "excluded subtree violation"),
        ("ip6", [x509.IPAddress(ipaddress.ip_address("2606:2800:220:1::1"))], "excluded subtree violation"),
        ("www.example.com", None, "permitted subtree violation"),  # no SAN: OpenSSL checks the CN as a name
    ],
)
def test_a_certificate_outside_the_constraints_fails_openssl(
    ca: LocalCA, tmp_path: Path, common_name: str, sans: list[x509.GeneralName] | None, error: str
):
    """The attacker's case: the CA key is stolen and used directly. OpenSSL must refuse."""
    result = openssl_verify(ca.cert_path, forged(ca.directory, common_name, sans), tmp_path)
    assert result.returncode != 0
    assert error in result.stdout + result.stderr


def test_the_forger_makes_valid_certificates_inside_the_constraints(ca: LocalCA, tmp_path: Path):
    """The control for the test above: the same forging code passes for an intercepted host, so
    what fails there is the name, not the certificate."""
    good = forged(ca.directory, "api.openai.com", [x509.DNSName("api.openai.com")])
    result = openssl_verify(ca.cert_path, good, tmp_path, "-verify_hostname", "api.openai.com")
    assert result.returncode == 0, result.stderr


def test_the_ca_cannot_make_another_ca(ca: LocalCA, tmp_path: Path):
    """path length 0: a sub-CA signed with the stolen key (which would carry no constraints) is refused."""
    ca_key = serialization.load_pem_private_key((ca.directory / CA_KEY).read_bytes(), password=None)
    sub_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sub_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sub CA")])
    sub = (
        x509.CertificateBuilder()
        .subject_name(sub_name)
        .issuer_name(ca.certificate.subject)
        .public_key(sub_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.openai.com")]))
        .issuer_name(sub_name)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.openai.com")]), critical=False)
        .sign(sub_key, hashes.SHA256())
    )
    untrusted = tmp_path / "sub.pem"
    untrusted.write_bytes(pem(sub))
    result = openssl_verify(ca.cert_path, pem(leaf), tmp_path, "-untrusted", str(untrusted))
    assert result.returncode != 0
    assert "path length constraint exceeded" in result.stdout + result.stderr


def test_server_context_passes_a_real_handshake(ca: LocalCA):
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    client.set_alpn_protocols(["h2", "http/1.1"])
    with tls_server(ca.server_context("api.openai.com")) as (port, seen):
        version, alpn = handshake(port, "api.openai.com", client)
    assert alpn == "http/1.1"  # offered h2 first: prompttap speaks HTTP/1.1 only
    assert version in ("TLSv1.2", "TLSv1.3")
    assert seen == [(version, "http/1.1")]


def test_server_context_refuses_old_tls_and_other_names(ca: LocalCA):
    with tls_server(ca.server_context("api.anthropic.com")) as (port, seen):
        old = ssl.create_default_context(cafile=str(ca.cert_path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so the client side can offer TLS 1.1 at all
        with pytest.raises(ssl.SSLError):
            handshake(port, "api.anthropic.com", old)
        client = ssl.create_default_context(cafile=str(ca.cert_path))
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            handshake(port, "api.openai.com", client)  # the certificate is api.anthropic.com's
        with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the CA
            handshake(port, "api.anthropic.com", ssl.create_default_context())
    assert "UNSUPPORTED_PROTOCOL" in str(seen[0])  # the server refused TLS 1.1


def test_leaf_contexts_are_cached_per_host(ca: LocalCA):
    first = ca.server_context("api.openai.com")
    assert ca.server_context("api.openai.com") is first
    assert ca.server_context("API.OpenAI.com.") is first  # the same host, written differently
    assert ca.server_context("api.anthropic.com") is not first
    with pytest.raises(ValueError, match="not one of the hosts"):
        ca.server_context("www.example.com")
    assert not [p for p in ca.directory.iterdir() if p.name.startswith(".leaf-")]  # the key file is gone


def test_key_is_owner_only_even_with_an_open_umask(tmp_path: Path):
    old = os.umask(0)
    try:
        ca = LocalCA.load_or_create(tmp_path / "ca", HOSTS)
    finally:
        os.umask(old)
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.cert_path.stat().st_mode) == 0o644
    assert not [p for p in ca.directory.iterdir() if p.name.endswith(".tmp")]


def test_a_loosened_key_is_tightened_on_load(ca: LocalCA):
    os.chmod(ca.key_path, 0o644)
    again = LocalCA.load_or_create(ca.directory, HOSTS)
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert again.fingerprint == ca.fingerprint and not again.reissued


def test_created_once_then_loaded(tmp_path: Path):
    first = LocalCA.load_or_create(tmp_path / "ca", HOSTS)
    assert first.created and not first.reissued
    second = LocalCA.load_or_create(tmp_path / "ca", reversed(HOSTS))  # order does not matter
    assert not second.created and not second.reissued
    assert second.fingerprint == first.fingerprint


def test_a_host_list_change_reissues_the_ca(ca: LocalCA, tmp_path: Path):
    old_leaf, _ = ca.issue_leaf("api.openai.com")
    more = LocalCA.load_or_create(ca.directory, [*HOSTS, "llm.internal.example"])
    assert more.reissued and not more.created
    assert "+llm.internal.example" in more.reason
    assert more.fingerprint != ca.fingerprint
    assert more.certificate.public_key() != ca.certificate.public_key()  # a new key, not just a new certificate
    assert "llm.internal.example" in more.hosts
    # The old CA's leaves are not trusted by the new CA, and the new CA signs for the new host.
    assert openssl_verify(more.cert_path, pem(old_leaf), tmp_path).returncode != 0
    leaf, _ = more.issue_leaf("llm.internal.example")
    assert openssl_verify(more.cert_path, pem(leaf), tmp_path).returncode == 0
    fewer = LocalCA.load_or_create(ca.directory, HOSTS[:1])
    assert fewer.reissued and "-api.anthropic.com" in fewer.reason
    assert fewer.hosts == (HOSTS[0],)


def test_without_update_hosts_the_existing_ca_is_kept(ca: LocalCA):
    kept = LocalCA.load_or_create(ca.directory, ["other.example"], update_hosts=False)
    assert not kept.reissued and kept.fingerprint == ca.fingerprint and kept.hosts == ca.hosts


def test_rotate_issues_a_new_key(ca: LocalCA):
    rotated = LocalCA.rotate(ca.directory, HOSTS)
    assert rotated.reissued and rotated.certificate.public_key() != ca.certificate.public_key()
    assert LocalCA.load_or_create(ca.directory, HOSTS).fingerprint == rotated.fingerprint


def test_a_key_that_does_not_match_is_replaced(ca: LocalCA):
    other = ec.generate_private_key(ec.SECP256R1())
    ca.key_path.write_bytes(
        other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    fixed = LocalCA.load_or_create(ca.directory, HOSTS)
    assert fixed.reissued and "does not match" in fixed.reason
    cert, _ = fixed.issue_leaf("api.openai.com")
    assert cert.verify_directly_issued_by(fixed.certificate) is None


def test_bundle_is_the_system_cas_plus_this_ca(ca: LocalCA, tmp_path: Path):
    system = Path(ssl.get_default_verify_paths().openssl_cafile)
    assert ca.system_bundle is not None and ca.system_bundle.resolve() == system.resolve()
    bundle = ca.bundle_path.read_bytes()
    assert bundle.startswith(system.read_bytes().rstrip(b"\n"))
    assert count_certs(bundle) == count_certs(system.read_bytes()) + 1
    assert bundle.endswith(ca.cert_pem)
    # A client trusting the bundle alone accepts prompttap's leaf ...
    with tls_server(ca.server_context("api.openai.com")) as (port, _):
        handshake(port, "api.openai.com", ssl.create_default_context(cafile=str(ca.bundle_path)))
    # ... and after a rotation the bundle holds the new CA, not the old one next to it.
    rotated = LocalCA.rotate(ca.directory, HOSTS)
    bundle = ca.bundle_path.read_bytes()
    assert bundle.endswith(rotated.cert_pem) and ca.cert_pem not in bundle
    assert count_certs(bundle) == count_certs(system.read_bytes()) + 1


def test_bundle_is_not_built_from_itself(ca: LocalCA, monkeypatch: pytest.MonkeyPatch):
    """Under `prompttap env`, SSL_CERT_FILE names the bundle: loading again must not nest it."""
    before = ca.bundle_path.read_bytes()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.bundle_path))
    LocalCA.rotate(ca.directory, HOSTS)
    after = ca.bundle_path.read_bytes()
    assert count_certs(after) == count_certs(before)


def test_processes_racing_to_create_get_one_ca(tmp_path: Path):
    script = (
        "import sys; from pathlib import Path; from prompttap.collector.intercept.ca import LocalCA; "
        "print(LocalCA.load_or_create(Path(sys.argv[1]), ['api.openai.com']).fingerprint)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", script, str(tmp_path / "ca")]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    prints = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(prints) == 1
    assert prints == {LocalCA.load_or_create(tmp_path / "ca", ["api.openai.com"]).fingerprint}


def test_a_ca_near_its_end_or_without_its_key_is_replaced(ca: LocalCA):
    key = serialization.load_pem_private_key(ca.key_path.read_bytes(), password=None)
    now = dt.datetime.now(dt.UTC)
    builder = x509.CertificateBuilder(
        issuer_name=ca.certificate.issuer,
        subject_name=ca.certificate.subject,
        public_key=ca.certificate.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=now - dt.timedelta(days=1),
        not_valid_after=now + dt.timedelta(days=10),
        extensions=list(ca.certificate.extensions),
    )
    ca.cert_path.write_bytes(pem(builder.sign(key, hashes.SHA256())))
    renewed = LocalCA.load_or_create(ca.directory, HOSTS)
    assert renewed.reissued and "expires on" in renewed.reason
    assert renewed.not_after - now > dt.timedelta(days=3000)

    renewed.key_path.unlink()
    again = LocalCA.load_or_create(ca.directory, HOSTS)
    assert again.reissued and not again.created and again.reason == "the CA key is missing"
    assert again.key_path.is_file()
