#!/usr/bin/env python3
"""The harness's mock upstream over TLS: its ASGI app (``mock_upstream.py``, unchanged), served by uvicorn
with the settings of its own ``main()`` plus a certificate. Runs in the harness venv.

    tls_mock.py --port PORT --cert KEY_AND_CHAIN.pem
"""

from __future__ import annotations

import argparse
import sys

from paths import HARNESS, HOST

sys.path.insert(0, str(HARNESS))
import mock_upstream  # the harness's module, found on the path above
import uvicorn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True, help="PEM file with the private key and the certificate chain")
    a = ap.parse_args()
    # The arguments of mock_upstream.main()'s uvicorn.run (single worker), so the TLS mock differs from
    # the plain one only by TLS.
    uvicorn.run(
        mock_upstream.app,
        host=HOST,
        port=a.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=120,
        backlog=4096,
        ssl_certfile=a.cert,
    )


if __name__ == "__main__":
    main()
