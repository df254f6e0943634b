"""prompttap's local certificate authority: it signs the certificates the forward proxy shows for the
hosts it intercepts, and nothing else.

The CA certificate carries critical X.509 name constraints that permit exactly the intercepted host
names (and, as RFC 5280 defines a DNS name constraint, names under them) and exclude every IP
address, so its key, if stolen, cannot impersonate any other site to a client that trusts it. It is
also restricted to TLS server certificates (extended key usage) and to signing leaves only
(path length 0). The constraints are the record of the host list it was issued for: when the list
changes, the CA is re-issued and the caller tells the user to trust it again.

Files in ``$PROMPTTAP_HOME/ca/``: ``prompttap-ca.pem`` (the certificate, public),
``prompttap-ca-key.pem`` (its key, mode 0600 from the moment it exists) and ``bundle.pem`` (the
system CAs plus this one, for clients; see ``bundle.py``). Leaf certificates are made per host on
demand with their own EC P-256 key, kept in memory only, and renewed before they expire.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import logging
import os
import secrets
import ssl
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from prompttap.collector.intercept.bundle import write_bundle
from prompttap.collector.intercept.files import write_atomic
from prompttap.collector.intercept.hosts import normalize_host

log = logging.getLogger("prompttap.intercept")

CA_CERT = "prompttap-ca.pem"
CA_KEY = "prompttap-ca-key.pem"
CA_VALIDITY = dt.timedelta(days=3650)
CA_RENEW_BEFORE = dt.timedelta(days=30)  # re-issue a CA this close to its end rather than let clients fail
LEAF_VALIDITY = dt.timedelta(days=30)  # leaves live in memory only, so short costs nothing
LEAF_RENEW_BEFORE = dt.timedelta(days=1)
BACKDATE = dt.timedelta(days=1)  # tolerate a client clock somewhat behind (mitmproxy backdates 2 days)
_ALL_IPS = [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")), x509.IPAddress(ipaddress.ip_network("::/0"))]


class CAError(Exception):
    """The CA cannot be read or written; the message is shown to the user as is."""


class LocalCA:
    """The CA in one folder. Get one with ``load_or_create`` (or ``rotate``)."""

    def __init__(self, directory: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.directory = directory
        self.certificate = certificate
        self._key = key
        self.created = False  # no CA existed: this one is new
        self.reissued = False  # a CA existed and was replaced: clients must trust the new one
        self.reason = ""  # why it was created or re-issued, for the log line
        self.system_bundle: Path | None = None  # where bundle.pem's system CAs came from
        self._contexts: dict[str, tuple[dt.datetime, ssl.SSLContext]] = {}
        self._lock = threading.Lock()

    # -- the files -------------------------------------------------------------------------------

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def key_path(self) -> Path:
        return self.directory / CA_KEY

    @property
    def bundle_path(self) -> Path:
        return self.directory / "bundle.pem"

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host names the CA may sign for, read from its own name constraints."""
        return _permitted_hosts(self.certificate)

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate, as trust stores and browsers show it."""
        return self.certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    # -- getting one -----------------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, directory: Path, hosts: Iterable[str], *, update_hosts: bool = True) -> LocalCA:
        """The CA in ``directory``, created if there is none and re-issued if it is unusable, about
        to expire or (with ``update_hosts``) constrained to other hosts than ``hosts``. ``created``
        and ``reissued`` say which happened. Safe against other prompttap processes doing the same."""
        wanted = _normalized(hosts)
        with _locked(directory):
            try:
                ca = cls._load(directory)
            except FileNotFoundError:
                return cls._issue(directory, wanted, created=True, reason="no CA existed")
            except _Unusable as exc:
                return cls._issue(directory, wanted, created=False, reason=str(exc))
            if update_hosts and set(ca.hosts) != set(wanted):
                return cls._issue(directory, wanted, created=False, reason=_host_change(ca.hosts, wanted))
            ca._write_bundle()
            return ca

    @classmethod
    def rotate(cls, directory: Path, hosts: Iterable[str]) -> LocalCA:
        """A new CA (new key) for ``hosts``, replacing any existing one."""
        wanted = _normalized(hosts)
        with _locked(directory):
            existed = (directory / CA_CERT).exists()
            return cls._issue(directory, wanted, created=not existed, reason="rotated on request")

    @classmethod
    def _load(cls, directory: Path) -> LocalCA:
        cert_pem = (directory / CA_CERT).read_bytes()
        key_file = directory / CA_KEY
        try:
            key_pem = key_file.read_bytes()
        except FileNotFoundError:
            raise _Unusable("the CA key is missing") from None
        mode = key_file.stat().st_mode & 0o777
        if mode & 0o077:  # someone loosened it: tighten it again, and say so
            os.chmod(key_file, 0o600)
            log.warning("the CA key %s was readable by others (mode %o); now 0600", key_file, mode)
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as exc:
            raise _Unusable(f"the CA files could not be read ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise _Unusable("the CA key does not match its certificate")
        if not _permitted_hosts(cert):
            raise _Unusable("the CA has no name constraints")
        if cert.not_valid_after_utc - _now() < CA_RENEW_BEFORE:
            raise _Unusable(f"the CA expires on {cert.not_valid_after_utc:%Y-%m-%d}")
        return cls(directory, cert, key)

    @classmethod
    def _issue(cls, directory: Path, hosts: list[str], *, created: bool, reason: str) -> LocalCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "prompttap"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"prompttap local CA {secrets.token_hex(4)}"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.NameConstraints(
                    permitted_subtrees=[x509.DNSName(h) for h in hosts],
                    excluded_subtrees=_ALL_IPS,  # no permitted IP subtree would leave every IP allowed
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            write_atomic(directory / CA_KEY, key_pem, 0o600)  # the key first: a certificate on disk has its key
            write_atomic(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        except OSError as exc:
            raise CAError(f"cannot write the CA to {directory}: {exc.strerror or exc}") from None
        ca = cls(directory, cert, key)
        ca.created, ca.reissued, ca.reason = created, not created, reason
        ca._write_bundle()
        return ca

    def _write_bundle(self) -> None:
        try:
            self.system_bundle = write_bundle(self.bundle_path, self.cert_pem)
        except OSError as exc:
            raise CAError(f"cannot write the CA bundle {self.bundle_path}: {exc.strerror or exc}") from None

    # -- leaves ----------------------------------------------------------------------------------

    def issue_leaf(self, host: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A server certificate for ``host`` (one of ``hosts``) with a fresh key, signed by the CA."""
        host = normalize_host(host)
        if host not in self.hosts:
            raise ValueError(f"{host} is not one of the hosts this CA was issued for")
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)] if len(host) <= 64 else []))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + LEAF_VALIDITY, self.not_after))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=len(host) > 64)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,  # ECDHE with an EC key: signing is all a TLS server does
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert, key

    def server_context(self, host: str) -> ssl.SSLContext:
        """The server-side TLS context presenting ``host``'s certificate (TLS 1.2 or later, ALPN
        ``http/1.1`` only), made on first use and cached until the certificate nears its end."""
        host = normalize_host(host)
        with self._lock:
            cached = self._contexts.get(host)
            if cached is not None and cached[0] - _now() > LEAF_RENEW_BEFORE:
                return cached[1]
            cert, key = self.issue_leaf(host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.set_alpn_protocols(["http/1.1"])
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ) + cert.public_bytes(serialization.Encoding.PEM)
            # The ssl module loads keys from files only: a 0600 temporary file that lives for this call.
            fd, name = tempfile.mkstemp(dir=self.directory, prefix=".leaf-", suffix=".pem")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                context.load_cert_chain(name)
            finally:
                os.unlink(name)
            self._contexts[host] = (cert.not_valid_after_utc, context)
            return context


class _Unusable(Exception):
    """The CA on disk cannot be used; the message says why (it is shown when re-issuing)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _normalized(hosts: Iterable[str]) -> list[str]:
    out = sorted({normalize_host(h) for h in hosts})
    if not out:
        raise ValueError("a CA needs at least one host to be constrained to")
    return out


def _permitted_hosts(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return ()
    names = constraints.permitted_subtrees or []
    return tuple(sorted(n.value for n in names if isinstance(n, x509.DNSName)))


def _host_change(old: Iterable[str], new: Iterable[str]) -> str:
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    parts = [f"+{h}" for h in added] + [f"-{h}" for h in removed]
    return "the intercepted hosts changed: " + " ".join(parts)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One process at a time creates or replaces the CA in ``directory``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CAError(f"cannot use the CA folder {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
