"""Hostile traffic, forwarded untouched and only where configured (issue 13, items 4, 5 and 6).

Against the real ``prompttap serve`` over raw sockets (a well-behaved client would normalise
what these tests send), with ``RawUpstream`` recording the exact bytes that reached it:

- item 4: an upload that does not complete (the client closes early, or frames its body in a way
  the proxy refuses) never reaches the upstream as a complete request, and its capture says
  ``client_cancelled`` with the bytes actually received;
- item 5: the request target reaches the upstream exactly as sent (``%3F``, ``%23``, ``%2F``,
  ``%2541`` stay as they are), a secret in a ``%3F``-encoded "query" is not stored in clear, and
  dot segments that would leave a route's prefix are refused with 400 before anything is sent;
- item 6: a header value with bytes outside ASCII reaches the upstream byte for byte.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Prompttap
from tests.raw_upstream import RawUpstream


@pytest.fixture(scope="module")
def up() -> Iterator[RawUpstream]:
    with RawUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def pt(up: RawUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prompttap]:
    home = tmp_path_factory.mktemp("hostile-forwarding")
    with Prompttap(home, up.base_url, "--route", f"pfx={up.base_url}/openai") as p:
        yield p


def marker() -> str:
    return uuid.uuid4().hex


def exchange(pt: Prompttap, request: bytes) -> bytes:
    """Send raw bytes as one request and return the whole answer (the proxy closes after it)."""
    with socket.create_connection(("127.0.0.1", pt.port), timeout=30) as s:
        s.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = s.recv(65536)
            if not data:
                return answer
            answer += data
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            0,
        )
        while len(body) < length and (data := s.recv(65536)):
            body += data
        return head + b"\r\n\r\n" + body


def get(path: bytes, *headers: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def tagged(pt: Prompttap, tag: str, timeout: float = 30.0) -> dict[str, Any]:
    """The one stored capture labelled ``tag`` (X-Prompttap-Tags), in full."""
    (item,) = pt.wait_captures(1, tag=tag, timeout=timeout)
    return pt.capture(item["id"])


# -- item 4: aborted uploads ---------------------------------------------------------------------


def test_an_upload_cut_short_never_reaches_the_upstream_as_a_complete_request(pt: Prompttap, up: RawUpstream):
    """2000 of 5080 declared body bytes, then the client closes."""
    n = marker()
    head = (
        b"POST /v1/chat/completions?n=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5080\r\nX-Prompttap-Tags: %s\r\n\r\n" % (n.encode(), n.encode())
    )
    with socket.create_connection(("127.0.0.1", pt.port), timeout=30) as s:
        s.sendall(head + b"a" * 2000)
        # Give the proxy time to forward what it has (it streams; the old proxy buffered it all).
        up.wait(lambda: any(c.body_size == 2000 for c in up.to(n.encode())), timeout=3)
    assert up.wait(lambda: all(c.ended for c in up.to(n.encode())), timeout=10)
    for seen in up.to(n.encode()):
        assert not seen.complete, "the upstream received a complete request the client never sent"
        assert seen.body_size <= 2000 and not seen.answered
    cap = tagged(pt, n)
    assert cap["outcome"] == "client_cancelled", cap["outcome"]
    assert cap["request_size"] == 2000 and "2000" in cap["error"]
    assert cap["truncated"] is False


def test_a_misframed_transfer_encoding_is_refused_and_never_forwarded(pt: Prompttap, up: RawUpstream):
    """``Transfer-Encoding: xchunked`` is not a framing the proxy can read: the client gets a 400,
    the upstream no complete request, and the capture says the upload did not complete."""
    n = marker()
    request = (
        b"POST /v1/chat/completions?n=%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n"
        b"X-Prompttap-Tags: %s\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % (n.encode(), n.encode())
    )
    answer = exchange(pt, request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    time.sleep(0.5)  # anything the proxy was going to send upstream has been sent by now
    assert not [c for c in up.to(n.encode()) if c.complete]
    cap = tagged(pt, n)
    assert cap["outcome"] == "client_cancelled" and cap["status_code"] != 200


# -- item 5: the raw path --------------------------------------------------------------------------


def test_a_percent_encoded_question_mark_stays_in_the_path_and_its_secret_is_not_stored(pt: Prompttap, up: RawUpstream):
    n = marker()
    secret = f"AIzaSy{n}WXYZ"
    path = f"/v1/models%3Fkey={secret}".encode()
    answer = exchange(pt, get(path, b"X-Prompttap-Tags: " + n.encode()))
    assert answer.startswith(b"HTTP/1.1 200 ")
    (seen,) = up.to(secret.encode())
    assert seen.target == path  # %3F intact: the upstream got no query
    cap = tagged(pt, n)
    assert cap["path"].startswith("/v1/models%3Fkey=") and cap["path"].endswith("WXYZ")
    assert secret not in json.dumps(cap)


@pytest.mark.parametrize(
    "path",
    [
        b"/v1/a%23b/{n}",  # %23 does not cut the path
        b"/v1/c%2Fd/{n}",  # %2F does not become /
        b"/v1/e%2541/{n}",  # %2541 stays, never becomes A
        b"/v1/f%20g/%7E%2e%41/{n}?q=%2F%3F&r=%2541",  # nothing re-encoded or decoded, query included
    ],
)
def test_the_request_target_reaches_the_upstream_exactly_as_sent(pt: Prompttap, up: RawUpstream, path: bytes):
    n = marker().encode()
    target = path.replace(b"{n}", n)
    answer = exchange(pt, get(target))
    assert answer.startswith(b"HTTP/1.1 200 ")
    (seen,) = up.to(n)
    assert seen.target == target


@pytest.mark.parametrize(
    "path",
    [
        b"/pfx/../v1/x",
        b"/pfx/%2e%2e/v1/x",
        b"/pfx/%2E%2E/v1/x",
        b"/pfx/.%2e/v1/x",
        b"/pfx/a/../../v1/x",
        b"/pfx/%2e%2e%2fv1/x",
    ],
)
def test_dot_segments_that_leave_a_route_are_refused(pt: Prompttap, up: RawUpstream, path: bytes):
    n = marker().encode()
    answer = exchange(pt, get(path + b"?n=" + n))
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert up.to(n) == []  # nothing reached any upstream


def test_dot_segments_inside_a_route_are_forwarded_as_sent(pt: Prompttap, up: RawUpstream):
    n = marker().encode()
    answer = exchange(pt, get(b"/pfx/v1/a/../models?n=" + n))
    assert answer.startswith(b"HTTP/1.1 200 ")
    (seen,) = up.to(n)
    assert seen.target == b"/openai/v1/a/../models?n=" + n


# -- item 6: header bytes ---------------------------------------------------------------------------


def test_a_non_ascii_header_value_reaches_the_upstream_byte_identical(pt: Prompttap, up: RawUpstream):
    n = marker().encode()
    value = b"\xff\xfe caf\xe9 \x80"
    answer = exchange(pt, get(b"/v1/models?n=" + n, b"X-Weird: " + value))
    assert answer.startswith(b"HTTP/1.1 200 ")
    (seen,) = up.to(n)
    assert seen.header(b"x-weird") == value
