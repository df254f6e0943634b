"""The capture schema is one definition: the migrations must produce exactly COLUMNS."""

from __future__ import annotations

import itertools
import re
import threading
import uuid

import pytest

from prompttap.schemas.capture import COLUMNS, Capture, new_capture_id, record_body_bytes
from prompttap.schemas.store import file_literal, migrate, migrations, open_store


@pytest.fixture(scope="module")
def store():
    return open_store("chdb://memory")


def _normalize(ch_type: str) -> str:
    return re.sub(r"\s+CODEC\(.*\)$", "", ch_type).replace(" ", "")


def test_migrations_create_exactly_the_declared_columns(store):
    migrate(store)
    result = store.query(
        "SELECT name, type FROM system.columns "
        "WHERE database = currentDatabase() AND table = 'captures' ORDER BY position"
    )
    actual = [(n, t.replace(" ", "")) for n, t in result.result_rows]
    assert actual == [(c.name, _normalize(c.ch_type)) for c in COLUMNS]


def test_migrations_are_idempotent_and_recorded(store):
    migrate(store)
    assert migrate(store) == []
    versions = [v for v, _, _ in migrations()]
    recorded = store.query("SELECT version FROM _prompttap_migrations FINAL ORDER BY version").result_rows
    assert [r[0] for r in recorded] == versions
    assert versions == sorted(set(versions))


def test_retention_ttl_is_applied_and_removed(store):
    migrate(store, retention_days=7)
    assert "toIntervalDay(7)" in store.command("SHOW CREATE TABLE captures")
    migrate(store, retention_days=0)
    assert "TTL" not in store.command("SHOW CREATE TABLE captures").split("SETTINGS")[0].split("ORDER BY")[1]


def test_file_literal_names_any_path_to_infile_and_outfile(store, tmp_path):
    """The one quoting of INFILE/OUTFILE paths (the store sink, the parquet export): a path with
    quotes and backslashes is read and written by the real engine, not cut or misparsed."""
    folder = tmp_path / "it's a \\ dir"
    folder.mkdir()
    source, target = folder / "in'put\\.jsonl", folder / "out'put.csv"
    source.write_text('{"n":1}\n{"n":2}\n')
    store.command("CREATE TABLE IF NOT EXISTS _file_literal (n UInt8) ENGINE = Memory")
    store.command(f"INSERT INTO _file_literal FROM INFILE {file_literal(source)} FORMAT JSONEachRow")
    store.command(f"SELECT n FROM _file_literal ORDER BY n INTO OUTFILE {file_literal(target)} TRUNCATE FORMAT CSV")
    assert target.read_text() == "1\n2\n"


def test_capture_ids_are_time_ordered_uuid7():
    ids = [new_capture_id() for _ in range(200)]
    assert all(i.version == 7 for i in ids)
    assert len(set(ids)) == 200
    assert [i.int >> 80 for i in ids] == sorted(i.int >> 80 for i in ids)


def test_capture_ids_are_strictly_increasing_within_one_millisecond():
    """Ids alone order the captures of one process, also many made in the same millisecond."""
    ids = [new_capture_id() for _ in range(100_000)]
    assert len({i.int >> 80 for i in ids}) < len(ids)  # many share a millisecond
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    # Still unguessable: every id carries fresh random bits, not only a counter.
    assert len({i.int & 0xFFFF_FFFF for i in ids}) > 0.99 * len(ids)


def test_capture_ids_stay_ordered_and_unique_across_threads():
    per_thread: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def make(out: list[uuid.UUID]) -> None:
        out.extend(new_capture_id() for _ in range(20_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(all(a < b for a, b in itertools.pairwise(out)) for out in per_thread)
    assert len({i for out in per_thread for i in out}) == 80_000


def test_record_keeps_binary_bodies_as_base64():
    c = Capture(new_capture_id(), "a" * 32, "b" * 16, "", 0.0, "default", "POST", "/x", "http://u/x")
    c.request_body = b"\xff\x00binary"
    c.response_body = "héllo".encode()
    rec = c.to_record()
    assert rec["request_body_encoding"] == "base64"
    assert rec["response_body_encoding"] == "utf-8"
    assert record_body_bytes(rec, "request") == b"\xff\x00binary"
    assert record_body_bytes(rec, "response") == "héllo".encode()
