"""Regression tests: a request whose body could not be sent leaves nothing for the GC to finalise.

httpx hands a request body to httpcore as an async generator
(``httpx._content.ByteStream.__aiter__``). httpcore abandons it half-way when
writing the body fails: it swallows a ``WriteError`` to read the response a
server may have sent before closing the connection (a reused keep-alive
connection the server had just closed, an early 413), and a write timeout or a
cancellation unwinds it. Under trio the abandoned generator, once finalised,
warns "Async generator 'httpx._content.ByteStream.__aiter__' was garbage
collected before it had been exhausted", which with ``filterwarnings = error``
failed whichever test was running then (httpx issues #3597 and #3686).

Each test makes the body write fail for sure: the server takes a small receive
buffer and never reads the body, so a body of several MiB cannot be sent whole.
It then checks, with a garbage collection inside the event loop, that no
warning and no unraisable exception came out of it. Only trio warns about an
abandoned async generator (asyncio closes it quietly); the asyncio runs check
that the call still behaves.
"""

from __future__ import annotations

import gc
import socket
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from llmfactory.api.transport import (
    NO_RETRY,
    Timeouts,
    close_clients,
    open_stream,
    request_json,
)
from llmfactory.errors import LLMAPIError, LLMConnectionError, LLMTimeoutError

# Far more than the loopback socket buffers hold while the server reads nothing.
BODY = {"prompt": "x" * (16 * 1024 * 1024)}
EARLY_ERROR = b'{"error": {"message": "request too large", "type": "invalid_request_error"}}'


class UnreadBodyServer:
    """An HTTP/1.1 server on 127.0.0.1 that reads a request's head and never its body.

    ``early_response=True``: it answers 413 at once and closes the connection
    with the body unread (the client's write then fails: a TCP reset).
    ``early_response=False``: it keeps the connection open, reading nothing
    more, until stopped (the client's write blocks).
    """

    def __init__(self, *, early_response: bool) -> None:
        self.early_response = early_response
        self.requests = 0
        self._listener = socket.socket()
        # A small receive window: the client can put only a little of the body in flight.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        port = self._listener.getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    def __enter__(self) -> UnreadBodyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in self._held:
            conn.close()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    break
                head += data
            self.requests += 1
            if self.early_response:
                conn.sendall(
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(EARLY_ERROR), EARLY_ERROR)
                )
                conn.close()  # with the body unread: a reset
            else:
                self._held.append(conn)


@pytest.fixture
async def clients() -> AsyncIterator[None]:
    """Close the pooled clients of the test's event loop when the test ends."""
    yield
    await close_clients()


@contextmanager
def nothing_left_to_finalise() -> Iterator[None]:
    """Fail when a warning or unraisable exception comes out of the block or of a
    garbage collection at its end (run inside the event loop)."""
    caught: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = caught.append
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield
            gc.collect()
    finally:
        sys.unraisablehook = previous
    assert not caught, [f"{u.exc_value!r} (in {u.object!r})" for u in caught]


@pytest.mark.anyio
async def test_a_body_the_server_would_not_read_unary(clients: None) -> None:
    """The server answers before reading the body and closes: httpcore swallows the
    failed write and reads the answer (what a reused keep-alive connection that the
    server had just closed goes through)."""
    with UnreadBodyServer(early_response=True) as server, nothing_left_to_finalise():
        with anyio.fail_after(30), pytest.raises((LLMAPIError, LLMConnectionError)) as info:
            await request_json("POST", server.url, json=BODY, retry=NO_RETRY)
        if isinstance(info.value, LLMAPIError):  # the answer came before the reset
            assert info.value.status == 413
        assert server.requests == 1


@pytest.mark.anyio
async def test_a_body_the_server_would_not_read_streamed(clients: None) -> None:
    with UnreadBodyServer(early_response=True) as server, nothing_left_to_finalise():
        with anyio.fail_after(30), pytest.raises((LLMAPIError, LLMConnectionError)):
            async with open_stream("POST", server.url, json=BODY, retry=NO_RETRY):
                pytest.fail("no 2xx was sent")
        assert server.requests == 1


@pytest.mark.anyio
async def test_a_write_timeout_mid_body(clients: None) -> None:
    with UnreadBodyServer(early_response=False) as server, nothing_left_to_finalise():
        with anyio.fail_after(30), pytest.raises(LLMTimeoutError, match="sending the request"):
            await request_json(
                "POST", server.url, json=BODY, timeouts=Timeouts(write=0.2), retry=NO_RETRY
            )
        assert server.requests == 1


@pytest.mark.anyio
async def test_cancelled_mid_body(clients: None) -> None:
    with UnreadBodyServer(early_response=False) as server, nothing_left_to_finalise():
        with anyio.fail_after(30):
            with anyio.move_on_after(0.2) as scope:
                await request_json("POST", server.url, json=BODY, retry=NO_RETRY)
            assert scope.cancelled_caught
        assert server.requests == 1
