"""A TLS mock upstream's credentials: a test CA (trustme) and its certificate for 127.0.0.1, as PEM files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class UpstreamTLS:
    ca: Path  # the test CA: what prompttap (--upstream-ca) and the direct client trust
    cert: Path  # the mock's private key and certificate chain, one PEM file (uvicorn --ssl-certfile)

    @classmethod
    def make(cls, directory: Path) -> UpstreamTLS:
        # ECDSA P-256 (trustme's default) like prompttap's own leaves, so a direct handshake and an
        # intercepted one sign with the same kind of key.
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        tls = cls(directory / "upstream-ca.pem", directory / "upstream.pem")
        ca.cert_pem.write_to_path(str(tls.ca))
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(tls.cert))
        return tls

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))
