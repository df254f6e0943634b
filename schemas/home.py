"""Where a running ``prompttap serve`` can be found from its home folder.

Commands other than ``serve`` (``export`` today) need the running server of a home, because the
embedded store belongs to one process. Two files in ``<home>/spool/`` say where it is:

- ``LOCK``: flock'd by ``serve`` (its spool) for its whole life. Held means a server runs.
- ``SERVER``: ``{"inspector": "http://127.0.0.1:PORT", "pid": N}``, written by ``serve`` once it
  holds the lock and just before its inspector serves, removed on a clean exit.

A ``SERVER`` file is believed only while the lock is held and its process lives, so one left
behind by a killed server (or by a server with ``--no-ui`` started after it) misleads nobody.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

SPOOL_DIR = "spool"
LOCK_FILE = "LOCK"
SERVER_FILE = "SERVER"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def local_url(host: str, port: int) -> str:
    """``http://host:port`` for reaching a listener on this machine (wildcards become loopback)."""
    host = _WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serving(home: Path) -> bool:
    """True while a ``prompttap serve`` holds this home's spool (probed with a shared
    non-blocking flock, released at once)."""
    try:
        fd = os.open(home / SPOOL_DIR / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def inspector_url(home: Path) -> str | None:
    """The inspector address the running ``serve`` of ``home`` recorded; None when no server
    runs there, it serves no inspector, or the record is stale."""
    if not serving(home):
        return None
    try:
        record = json.loads((home / SPOOL_DIR / SERVER_FILE).read_text())
        url, pid = str(record["inspector"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if _alive(pid) else None


def record_inspector(home: Path, url: str) -> None:
    """Say where this process's inspector listens (atomically: a reader sees all or nothing)."""
    path = home / SPOOL_DIR / SERVER_FILE
    tmp = path.with_name(f".{SERVER_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"inspector": url, "pid": os.getpid()}) + "\n")
    os.replace(tmp, path)


def forget_inspector(home: Path) -> None:
    """Remove this process's record (another process's is left alone)."""
    path = home / SPOOL_DIR / SERVER_FILE
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if int(json.loads(path.read_text())["pid"]) == os.getpid():
            path.unlink()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True
