"""Opening the ClickHouse store and bringing its schema up to date.

The same code talks to the embedded engine (``chdb:///path``, clickhouse-connect's chDB
backend) and to a server (``http(s)://user:pass@host:8123/db``). Migrations are the
numbered SQL files beside this module, applied in order, each once, recorded in
``_prompttap_migrations``; every statement is idempotent so a half-applied migration can
simply run again.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prompttap.schemas.credentials import scrub

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class StoreError(RuntimeError):
    """The store cannot be opened or migrated; the message is shown to the user."""


ENGINE_MALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
"""jemalloc options for the embedded engine (``JE_MALLOC_CONF``; a value already set wins)."""


def open_store(dsn: str) -> Any:
    """A clickhouse-connect client for ``dsn``. Raises StoreError with a one-line reason."""
    import clickhouse_connect

    if dsn.startswith("chdb://"):
        # Before the engine's library loads: its jemalloc then hands freed pages back to the
        # OS at once instead of keeping them for seconds (measured: about -100 MiB RSS under load).
        os.environ.setdefault("JE_MALLOC_CONF", ENGINE_MALLOC_CONF)
        path = dsn[len("chdb://") :]
        if path not in ("", "memory", ":memory:"):
            Path(path).mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_native_stderr(dsn.startswith("chdb://")):
            client = clickhouse_connect.get_client(dsn=dsn)
            client.command("SELECT 1")
    except Exception as exc:  # any failure here means "cannot use this store"
        raise StoreError(f"cannot open store {redact_dsn(dsn)}: {_reason(exc)}") from None
    if dsn.startswith("chdb://"):
        client = LockedClient(client)
    return client


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "Unable to open the chdb engine" in text or "EmbeddedServer" in text or "Cannot lock file" in text:
        return "the embedded store is already open in another process (is `prompttap serve` running?)"
    if "Connection refused" in text:
        return "connection refused"
    if "Authentication failed" in text or "AUTHENTICATION_FAILED" in text:
        return "authentication failed"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]


@contextlib.contextmanager
def _quiet_native_stderr(active: bool) -> Iterator[None]:
    """chDB's engine writes its own errors straight to fd 2; keep them out of the
    user's terminal while opening (the reason is reported as one line instead)."""
    if not active:
        yield
        return
    saved = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class LockedClient:
    """Serializes calls into one embedded engine shared by the drain and the inspector."""

    embedded = True  # its queries run in this process, on the calling thread

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return locked


def redact_dsn(dsn: str) -> str:
    """The DSN with its password masked (``schemas.credentials.scrub``, the one scrubber)."""
    return scrub(dsn)


def file_literal(path: str | Path) -> str:
    """``path`` as the ClickHouse string literal ``FROM INFILE`` / ``INTO OUTFILE`` take:
    quoted, with its backslashes and quotes escaped."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def open_migrated(dsn: str, retention_days: int = 0) -> Any:
    """``open_store`` with the schema up to date. Raises StoreError with a one-line reason.

    The embedded engine is migrated in a short-lived child process first: the DDL and index
    builds of a migration leave 40-50 MiB in the engine that a long-running proxy would carry
    for its whole life (measured after the first start on a fresh store); the child takes it
    with it. A ClickHouse server is migrated over the same client.
    """
    if dsn.startswith("chdb://"):
        import subprocess
        import sys

        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(
            [sys.executable, "-m", "prompttap.schemas.store", dsn, str(int(retention_days))],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise StoreError(lines[-1] if lines else f"cannot migrate store {redact_dsn(dsn)}")
        return open_store(dsn)
    client = open_store(dsn)
    _migrate_or_explain(client, dsn, retention_days)
    return client


def _migrate_or_explain(client: Any, dsn: str, retention_days: int) -> None:
    try:
        migrate(client, retention_days)
    except Exception as exc:
        raise StoreError(f"cannot migrate store {redact_dsn(dsn)}: {_reason(exc)}") from None


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    out = []
    for path in sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        out.append((int(path.name[:4]), path.stem, path.read_text()))
    return out


def migrate(client: Any, retention_days: int = 0) -> list[str]:
    """Apply pending migrations and the retention TTL; returns the names applied now."""
    client.command(
        "CREATE TABLE IF NOT EXISTS _prompttap_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM _prompttap_migrations FINAL").result_rows}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        for statement in _statements(sql):
            client.command(statement)
        client.insert("_prompttap_migrations", [[version, name]], column_names=["version", "name"])
        applied.append(name)
    set_retention(client, retention_days)
    return applied


def set_retention(client: Any, days: int) -> None:
    """Captures older than ``days`` are dropped by ClickHouse's TTL; 0 keeps them forever."""
    if days > 0:
        client.command(f"ALTER TABLE captures MODIFY TTL toDateTime(started_at) + toIntervalDay({int(days)})")
    else:
        try:
            client.command("ALTER TABLE captures REMOVE TTL")
        except Exception as exc:
            if "TTL" not in str(exc) and "BAD_ARGUMENTS" not in str(exc):
                raise


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


if __name__ == "__main__":  # the migration child of ``open_migrated``: DSN, retention days
    import sys

    try:
        _client = open_store(sys.argv[1])
        _migrate_or_explain(_client, sys.argv[1], int(sys.argv[2]))
        _client.close()
    except StoreError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
