"""The spool's files: segment and record framing, cursor files, the directory lock.

Segment header (20 B): b"PTSPOL", version u16, base_seq u64 (seq of its first record), crc32 of the first
16 B. The first 8 bytes stay fixed in future versions, so a newer segment is recognised and left alone.
Record: b"\\xc5\\x01", length u32, seq u64, crc32(payload) u32, crc32(first 18 B) u32, payload. The header
crc tells a flipped length from a torn tail and lets readers resync on the next valid header. seq is only
used for ``pending`` accounting and resync plausibility, never to filter records.
Cursor file (33 B): b"PTCU", version u8, segment u64, offset u64, seq u64, crc32 of the rest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

VERSION = 1
_SEG = struct.Struct("<6sHQI")  # magic, version, base_seq, crc
_SEG_MAGIC = b"PTSPOL"
HDR = _SEG.size
_REC = struct.Struct("<2sIQII")  # magic, length, seq, payload crc, header crc
REC = _REC.size
_REC_MAGIC = b"\xc5\x01"
_CUR = struct.Struct("<4sBQQQI")  # magic, version, segment, offset, seq, crc
_CUR_MAGIC = b"PTCU"
SEG_RE = re.compile(r"^(\d{20})\.seg$")
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_SCAN_CHUNK = 2**20
LOCK_TIMEOUT = 5.0  # a crashed predecessor's lock goes away with its fds; a live one is a misconfiguration
NO_LIMIT = 1 << 62

# Fault-injection seams: tests replace these instead of the global os module.
write = os.write
fsync = os.fsync


class Pos(NamedTuple):
    seg: int
    off: int
    seq: int  # seq of the next record expected; only feeds pending()


@dataclass
class Seg:
    """What the spool knows of one segment file."""

    id: int
    size: int  # committed bytes; readers never look past it
    base: int  # seq of its first record, 0 when the header is damaged
    header_ok: bool = True


def seg_path(directory: Path, sid: int) -> Path:
    return directory / f"{sid:020d}.seg"


def write_all(fd: int, data: bytes) -> None:
    view, done = memoryview(data), 0
    while done < len(data):
        n = write(fd, view[done:])
        if n <= 0:
            raise OSError(errno.ENOSPC, "write made no progress")
        done += n


# -- segments -------------------------------------------------------------------------------------------


def create_segment(path: Path, base_seq: int) -> int:
    """A new segment file holding only its header; returns its O_APPEND fd. Leaves nothing on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        head = struct.pack("<6sHQ", _SEG_MAGIC, VERSION, base_seq)
        write_all(fd, head + struct.pack("<I", zlib.crc32(head)))
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return fd


def inspect_segment(path: Path, sid: int) -> Seg | str:
    """The segment as found on disk, or why it must be left alone (unreadable, future version)."""
    try:
        with open(path, "rb") as f:
            head, size = f.read(HDR), os.fstat(f.fileno()).st_size
    except OSError as e:  # e.g. a directory or unreadable file named like a segment
        return f"unreadable: {e.strerror}"
    if head[:6] == _SEG_MAGIC and len(head) >= 8 and struct.unpack_from("<H", head, 6)[0] > VERSION:
        return f"future format version {struct.unpack_from('<H', head, 6)[0]}"
    if size < HDR:
        return Seg(sid, size, 0)  # created but header never written: holds nothing
    magic, version, base, crc = _SEG.unpack(head)
    ok = magic == _SEG_MAGIC and version == VERSION and zlib.crc32(head[:-4]) == crc
    return Seg(sid, size, base if ok else 0, ok)  # a bad header: records are self-checking, salvage them


# -- records --------------------------------------------------------------------------------------------


def frame(seq: int, payload: bytes) -> bytes:
    head = struct.pack("<2sIQI", _REC_MAGIC, len(payload), seq, zlib.crc32(payload))
    return b"".join((head, struct.pack("<I", zlib.crc32(head)), payload))


def _header(buf: bytes) -> tuple[int, int, int] | None:
    """(length, seq, payload crc) if buf starts with a valid record header."""
    if len(buf) < REC:
        return None
    magic, length, seq, pcrc, hcrc = _REC.unpack_from(buf)
    if magic != _REC_MAGIC or zlib.crc32(buf[: REC - 4]) != hcrc:
        return None
    return length, seq, pcrc


def _resync(fd: int, start: int, end: int, min_seq: int) -> int:
    """Offset of the next fully valid record in [start, end), else end."""
    off = start
    while off < end:
        chunk = os.pread(fd, min(_SCAN_CHUNK, end - off), off)
        if not chunk:
            break
        i = chunk.find(_REC_MAGIC)
        while i != -1:
            cand = off + i
            h = _header(os.pread(fd, REC, cand))
            ok = h is not None and h[1] >= min_seq and cand + REC + h[0] <= end
            if ok and h and zlib.crc32(os.pread(fd, h[0], cand + REC)) == h[2]:
                return cand
            i = chunk.find(_REC_MAGIC, i + 1)
        off += max(1, len(chunk) - 1)  # 1-byte overlap: the 2-byte magic may straddle chunks
    return end


def next_item(fd: int, off: int, end: int, min_seq: int, budget: int) -> tuple[str, int, int, bytes]:
    """Item at off: ("rec", next, seq, payload); ("bad", next, seq or 0, b"") for a corrupt span;
    ("full", off, 0, b"") if the record exceeds budget; ("end", end, 0, b"")."""
    if off >= end:
        return "end", end, 0, b""
    h = _header(os.pread(fd, REC, off))
    if h is not None and off + REC + h[0] <= end:
        length, seq, pcrc = h
        if length > budget:
            return "full", off, 0, b""
        payload = os.pread(fd, length, off + REC) if length else b""
        nxt = off + REC + length
        if len(payload) == length and zlib.crc32(payload) == pcrc:
            return "rec", nxt, seq, payload
        return "bad", nxt, seq, b""  # header crc vouches for the length: skip exactly this record
    return "bad", _resync(fd, off + 1, end, min_seq), 0, b""


# -- cursors and the lock -------------------------------------------------------------------------------


def cursor_path(directory: Path, consumer: str) -> Path:
    return directory / f"cursor-{consumer}.pos"


def load_cursor(directory: Path, consumer: str) -> Pos | None:
    """The consumer's acked position, None if it never acked; ValueError if the file is damaged."""
    try:
        data = cursor_path(directory, consumer).read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        data = b""
    if len(data) == _CUR.size:
        magic, version, seg, off, seq, crc = _CUR.unpack(data)
        if magic == _CUR_MAGIC and version == VERSION and zlib.crc32(data[:-4]) == crc:
            return Pos(seg, off, seq)
    raise ValueError(f"damaged cursor file for {consumer}")


def save_cursor(directory: Path, dir_fd: int, consumer: str, pos: Pos) -> None:
    """Replace the cursor file atomically (tmp, fsync, rename, fsync dir): durable on return."""
    data = _CUR.pack(_CUR_MAGIC, VERSION, *pos, 0)[:-4]
    final = cursor_path(directory, consumer)
    tmp = final.with_name(final.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data + struct.pack("<I", zlib.crc32(data)))
        fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync(dir_fd)


def lock_dir(path: Path) -> int:
    """flock ``path`` (two processes appending to one spool would interleave); returns its fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"spool {path.parent} is in use by another process") from None
            time.sleep(0.02)


class Handles:
    """Every fd the spool owns, closable without the Spool object (weakref.finalize must not hold it)."""

    def __init__(self) -> None:
        self.lock: int | None = None
        self.dir: int | None = None
        self.active: int | None = None
        self.sealed: list[int] = []  # rotated-out segments still waiting for their last fsync
        self.stop = threading.Event()

    def close(self) -> None:
        self.stop.set()
        for fd in [*self.sealed, self.active, self.dir, self.lock]:  # lock last: it guards the rest
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.sealed, self.active, self.dir, self.lock = [], None, None, None
