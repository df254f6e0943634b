"""The CA bundle clients get in ``SSL_CERT_FILE``: the system's CAs plus prompttap's.

A client pointed at it keeps trusting every site it trusted before, and trusts prompttap's
certificates for the intercepted hosts too. It is rewritten whenever the CA or the system's bundle
changes (every time the CA is loaded, if the content differs).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from prompttap.collector.intercept.files import write_atomic

SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL, CentOS
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, FreeBSD, Alpine
)


def system_bundle(exclude: Path) -> Path | None:
    """The system's CA bundle file: OpenSSL's compiled-in default, else each OS's usual place.

    ``SSL_CERT_FILE`` is deliberately not read: under ``prompttap env`` it names our own bundle
    (``exclude``), which must not be built from itself.
    """
    for candidate in (ssl.get_default_verify_paths().openssl_cafile, *SYSTEM_BUNDLES):
        path = Path(candidate)
        if path.is_file() and path.resolve() != exclude.resolve():
            return path
    return None


def write_bundle(path: Path, ca_pem: bytes) -> Path | None:
    """Write the system CAs followed by ``ca_pem`` to ``path`` unless it already holds exactly that.
    Returns where the system CAs came from; None when none were found (the bundle is the CA alone)."""
    source = system_bundle(path)
    system = source.read_bytes().rstrip(b"\n") + b"\n" if source else b""
    data = system + ca_pem
    try:
        if path.read_bytes() == data:
            return source
    except FileNotFoundError:
        pass
    write_atomic(path, data, 0o644)
    return source
