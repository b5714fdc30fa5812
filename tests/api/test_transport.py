"""Tests for the pooled transport: retries, error mapping, timeouts, connection release.

Every test talks real HTTP to a tiny scripted HTTP/1.1 server on 127.0.0.1 that
runs its own asyncio loop in a background thread, so the client under test can
run on asyncio or trio, and the server can misbehave at the byte level (stall,
cut the connection, reset it).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfactory.api.streaming import iter_ndjson, iter_sse_json
from llmfactory.api.transport import (
    DEFAULT_RETRY,
    NO_RETRY,
    RetryPolicy,
    Timeouts,
    close_clients,
    get_client,
    open_stream,
    parse_retry_after,
    request_json,
)
from llmfactory.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    LLMAPIError,
    LLMConnectionError,
    LLMTimeoutError,
    MalformedResponseError,
    RateLimitError,
)

FAST_RETRY = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)

# --------------------------------------------------------------------------- scripted server


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)


class Conn:
    """The server side of one connection, for handlers to write responses with."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False

    async def respond(
        self,
        status: int,
        body: bytes | str | dict[str, Any] = b"",
        *,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """A complete response with Content-Length."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        lines = [f"HTTP/1.1 {status} X", f"content-type: {content_type}"]
        lines += [f"content-length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()

    async def start(self, status: int = 200, content_type: str = "application/x-ndjson") -> None:
        """The head of a chunked (streaming) response."""
        self.writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
            "transfer-encoding: chunked\r\n\r\n".encode()
        )
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        """One chunk of a chunked body."""
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end(self) -> None:
        """The last chunk of a chunked body."""
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def wait_for_client_to_close(self) -> None:
        """Stall (send nothing) until the client closes the connection."""
        while await self.reader.read(65536):
            pass
        self.close()

    def close(self) -> None:
        """Close the connection (FIN)."""
        self.closed = True
        self.writer.close()

    def reset(self) -> None:
        """Abort the connection with a TCP reset."""
        self.closed = True
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Request, Conn], Awaitable[None]]


class Server:
    """A scripted HTTP/1.1 server (keep-alive) on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self.connections_opened = 0
        self.connections_open = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.port = 0

    def route(self, path: str) -> Callable[[Handler], Handler]:
        """Register the handler for ``path`` (decorator)."""

        def register(handler: Handler) -> Handler:
            self.handlers[path] = handler
            return handler

        return register

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> list[Request]:
        """The requests received for ``path``."""
        return [r for r in self.requests if r.path == path]

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "test server did not start"

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections_opened += 1
        self.connections_open += 1
        conn = Conn(reader, writer)
        try:
            while not conn.closed:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, path.split("?")[0], headers, body)
                self.requests.append(request)
                handler = self.handlers.get(request.path)
                if handler is None:
                    await conn.respond(404, {"error": f"no route {path}"})
                else:
                    await handler(request, conn)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.connections_open -= 1
            self._tasks.discard(task)
            if not conn.closed:
                writer.close()


@pytest.fixture
def server() -> Iterator[Server]:
    """A fresh scripted server for one test."""
    srv = Server()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
async def clients() -> AsyncIterator[None]:
    """Close the pooled clients of the test's event loop when the test ends."""
    yield
    await close_clients()


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait (at most 5 s) until ``predicate()`` holds (it changes in the server thread)."""
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110  (no event to wait on across threads)
            await anyio.sleep(0.01)


def pool_connections(url: str) -> list[Any]:
    """The httpcore connections held by the pooled client for ``url``."""
    transport = get_client(url)._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    return list(transport._pool.connections)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- unary calls


@pytest.mark.anyio
async def test_request_json_round_trip(server: Server, clients: None) -> None:
    @server.route("/api/show")
    async def show(request: Request, conn: Conn) -> None:
        await conn.respond(200, {"echo": json.loads(request.body), "ok": True})

    got = await request_json("POST", server.url("/api/show"), json={"model": "llama3"})
    assert got == {"echo": {"model": "llama3"}, "ok": True}
    assert server.hits("/api/show")[0].headers["content-type"] == "application/json"


@pytest.mark.anyio
async def test_empty_body_is_none(server: Server, clients: None) -> None:
    @server.route("/")
    async def root(request: Request, conn: Conn) -> None:
        await conn.respond(200, b"", content_type="text/plain")

    assert await request_json("GET", server.url("/")) is None


@pytest.mark.anyio
async def test_retry_429_honours_retry_after_seconds(server: Server, clients: None) -> None:
    @server.route("/v1/chat/completions")
    async def chat(request: Request, conn: Conn) -> None:
        if len(server.requests) == 1:
            await conn.respond(
                429,
                {"error": {"message": "Rate limit exceeded", "type": "rate_limit_error"}},
                headers={"retry-after": "0.2"},
            )
        else:
            await conn.respond(200, {"id": "chatcmpl-1"})

    got = await request_json("POST", server.url("/v1/chat/completions"), json={})
    assert got == {"id": "chatcmpl-1"}
    first, second = server.requests
    assert len(server.requests) == 2
    assert 0.18 <= second.received_at - first.received_at < 5.0


@pytest.mark.anyio
async def test_retry_429_honours_retry_after_http_date(server: Server, clients: None) -> None:
    @server.route("/x")
    async def x(request: Request, conn: Conn) -> None:
        if len(server.requests) == 1:
            # HTTP dates have whole seconds: pick one 0.2 to 1.2 s ahead.
            now = time.time()
            target = math.floor(now) + (2 if now % 1 > 0.8 else 1)
            date = email.utils.formatdate(target, usegmt=True)
            await conn.respond(429, {"error": "slow down"}, headers={"Retry-After": date})
        else:
            await conn.respond(200, {"ok": 1})

    assert await request_json("GET", server.url("/x")) == {"ok": 1}
    first, second = server.requests
    assert 0.1 <= second.received_at - first.received_at < 5.0


@pytest.mark.anyio
async def test_retry_after_beyond_the_cap_raises_rate_limit_at_once(
    server: Server, clients: None
) -> None:
    @server.route("/x")
    async def x(request: Request, conn: Conn) -> None:
        await conn.respond(
            429,
            {"error": {"message": "Rate limit exceeded", "code": "rate_limit_exceeded"}},
            headers={"Retry-After": "120"},
        )

    with pytest.raises(RateLimitError) as info:
        await request_json("GET", server.url("/x"), provider="openai")
    assert info.value.retry_after == 120
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.provider == "openai"
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_retries_are_bounded(server: Server, clients: None) -> None:
    @server.route("/x")
    async def x(request: Request, conn: Conn) -> None:
        await conn.respond(503, {"error": "server busy, please try again."})

    with pytest.raises(LLMAPIError) as info:
        await request_json("GET", server.url("/x"), retry=FAST_RETRY)
    assert info.value.status == 503
    assert "server busy" in str(info.value)
    assert len(server.requests) == 3


@pytest.mark.anyio
async def test_500_once_then_success(server: Server, clients: None) -> None:
    @server.route("/x")
    async def x(request: Request, conn: Conn) -> None:
        if len(server.requests) == 1:
            await conn.respond(500, {"error": "boom"})
        else:
            await conn.respond(200, {"ok": True})

    assert await request_json("GET", server.url("/x"), retry=FAST_RETRY) == {"ok": True}
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_non_retryable_status_is_not_retried(server: Server, clients: None) -> None:
    @server.route("/api/chat")
    async def chat(request: Request, conn: Conn) -> None:
        await conn.respond(404, {"error": "model 'nope' not found, try pulling it first"})

    with pytest.raises(LLMAPIError) as info:
        await request_json("POST", server.url("/api/chat"), json={}, provider="ollama")
    assert type(info.value) is LLMAPIError
    assert info.value.status == 404
    assert "model 'nope' not found" in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_reset_before_any_response_is_retried(server: Server, clients: None) -> None:
    @server.route("/x")
    async def x(request: Request, conn: Conn) -> None:
        if len(server.requests) == 1:
            conn.reset()
        else:
            await conn.respond(200, {"ok": True})

    assert await request_json("GET", server.url("/x"), retry=FAST_RETRY) == {"ok": True}
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_connect_refused_is_retried_then_raised(
    clients: None, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/tags"
    with (
        caplog.at_level(logging.DEBUG, logger="llmfactory.transport"),
        pytest.raises(LLMConnectionError) as info,
    ):
        await request_json("GET", url, retry=FAST_RETRY, provider="ollama")
    error = info.value
    assert not isinstance(error, LLMTimeoutError)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert error.url == url
    assert url in str(error)
    assert "is ollama running" in str(error)
    assert sum("retrying" in record.getMessage() for record in caplog.records) == 2


@pytest.mark.anyio
async def test_read_timeout_before_the_response_is_not_retried(
    server: Server, clients: None
) -> None:
    @server.route("/x")
    async def x(request: Request, conn: Conn) -> None:
        await conn.wait_for_client_to_close()

    with pytest.raises(LLMTimeoutError) as info:
        await request_json("GET", server.url("/x"), timeouts=Timeouts(read=0.3))
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert "did not answer within 0.3 s" in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_redirects_are_not_followed(server: Server, clients: None) -> None:
    @server.route("/v1/models")
    async def models(request: Request, conn: Conn) -> None:
        await conn.respond(307, b"", headers={"location": "http://elsewhere.example/v1/models"})

    with pytest.raises(LLMAPIError) as info:
        await request_json("GET", server.url("/v1/models"))
    assert info.value.status == 307
    assert "http://elsewhere.example/v1/models" in str(info.value)
    assert "configure that URL" in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("chunked", [False, True])
async def test_body_larger_than_the_cap(server: Server, clients: None, chunked: bool) -> None:
    @server.route("/big")
    async def big(request: Request, conn: Conn) -> None:
        if not chunked:
            await conn.respond(200, b"[" + b"1," * 5000 + b"1]")
            return
        await conn.start(content_type="application/json")
        await conn.chunk(b"[")
        for _ in range(100):
            await conn.chunk(b"1," * 50)
        await conn.chunk(b"1]")
        await conn.end()

    with pytest.raises(MalformedResponseError, match="larger than 1000 bytes"):
        await request_json("GET", server.url("/big"), max_body_bytes=1000)
    assert await request_json("GET", server.url("/big"), max_body_bytes=20_000) == [1] * 5001


@pytest.mark.anyio
async def test_body_that_is_not_json(server: Server, clients: None) -> None:
    @server.route("/")
    async def root(request: Request, conn: Conn) -> None:
        await conn.respond(200, "Ollama is running", content_type="text/plain")

    with pytest.raises(MalformedResponseError, match="not JSON") as info:
        await request_json("GET", server.url("/"))
    assert info.value.body == "Ollama is running"


@pytest.mark.anyio
async def test_200_with_an_error_object(server: Server, clients: None) -> None:
    @server.route("/api/v0/models")
    async def models(request: Request, conn: Conn) -> None:
        await conn.respond(200, {"error": "Unexpected endpoint or method. (GET /api/v0/models)"})

    with pytest.raises(LLMAPIError, match="Unexpected endpoint") as info:
        await request_json("GET", server.url("/api/v0/models"))
    assert info.value.status == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body", "content_type", "cls", "message", "error_type", "code"),
    [
        (400, {"error": "missing request body"}, "application/json", LLMAPIError,
         "missing request body", None, None),
        (401, {"error": {"message": "Invalid API key", "type": "authentication_error",
                         "code": 401}}, "application/json", AuthenticationError,
         "Invalid API key", "authentication_error", "401"),
        (403, {"type": "error", "error": {"type": "permission_error", "message": "nope"}},
         "application/json", AuthenticationError, "nope", "permission_error", None),
        (400, {"error": {"message": "This model's maximum context length is 4096 tokens",
                         "type": "invalid_request_error", "param": "messages",
                         "code": "context_length_exceeded"}}, "application/json",
         ContextLengthExceededError, "maximum context length", "invalid_request_error",
         "context_length_exceeded"),
        (400, {"error": {"code": 400, "message": "request (5000 tokens) exceeds the available "
                         "context size (4096 tokens)", "type": "exceed_context_size_error"}},
         "application/json", ContextLengthExceededError, "exceeds the available context size",
         "exceed_context_size_error", "400"),
        (400, {"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "prompt is too long: 210000 tokens"}},
         "application/json", ContextLengthExceededError, "prompt is too long",
         "invalid_request_error", None),
        (413, {"type": "error", "error": {"type": "request_too_large",
                                          "message": "Request exceeds the maximum size"}},
         "application/json", LLMAPIError, "maximum size", "request_too_large", None),
        (400, {"object": "error", "message": "model not served", "type": "BadRequestError",
               "param": None, "code": 400}, "application/json", LLMAPIError,
         "model not served", "BadRequestError", "400"),
        (404, {"detail": "Not Found"}, "application/json", LLMAPIError, "Not Found", None, None),
        (502, "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
         "text/html", LLMAPIError, "502 Bad Gateway", None, None),
        (501, "not implemented here", "text/plain", LLMAPIError, "not implemented here",
         None, None),
    ],
)  # fmt: skip
async def test_error_body_shapes(
    server: Server,
    clients: None,
    status: int,
    body: Any,
    content_type: str,
    cls: type[LLMAPIError],
    message: str,
    error_type: str | None,
    code: str | None,
) -> None:
    @server.route("/e")
    async def e(request: Request, conn: Conn) -> None:
        await conn.respond(status, body, content_type=content_type)

    with pytest.raises(LLMAPIError) as info:
        await request_json("POST", server.url("/e"), json={}, retry=NO_RETRY, provider="p")
    error = info.value
    assert type(error) is cls
    assert (error.status, error.error_type, error.code) == (status, error_type, code)
    assert message in str(error)
    assert error.provider == "p"
    assert error.url == server.url("/e")
    assert 0 < len(error.body) <= 2000


@pytest.mark.anyio
async def test_error_body_excerpt_is_bounded(server: Server, clients: None) -> None:
    @server.route("/e")
    async def e(request: Request, conn: Conn) -> None:
        await conn.respond(400, {"error": "x" * 100_000})

    with pytest.raises(LLMAPIError) as info:
        await request_json("GET", server.url("/e"))
    assert len(info.value.body) == 2000
    assert len(str(info.value)) < 1000


@pytest.mark.anyio
async def test_no_secrets_in_messages_or_logs(
    server: Server, clients: None, caplog: pytest.LogCaptureFixture
) -> None:
    @server.route("/v1/messages")
    async def messages(request: Request, conn: Conn) -> None:
        await conn.respond(
            401,
            {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
        )

    url = server.url("/v1/messages") + "?key=sk-query-secret"
    with (
        caplog.at_level(logging.DEBUG, logger="llmfactory.transport"),
        pytest.raises(AuthenticationError) as info,
    ):
        await request_json("POST", url, json={}, headers={"x-api-key": "sk-header-secret"})
    assert server.requests[0].headers["x-api-key"] == "sk-header-secret"
    texts = [str(info.value), repr(info.value), str(info.value.url), caplog.text]
    assert not any("secret" in text for text in texts)


# --------------------------------------------------------------------------- streams


async def _ollama_stream(request: Request, conn: Conn) -> None:
    await conn.start()
    body = (
        b"".join(
            json.dumps({"message": {"content": word}, "done": False}).encode() + b"\n"
            for word in ["Hé", "llo", " wörld"]
        )
        + b'{"done":true}\r\n'
    )
    # Chunk boundaries fall inside lines and inside multi-byte characters.
    for i in range(0, len(body), 7):
        await conn.chunk(body[i : i + 7])
    await conn.end()


@pytest.mark.anyio
async def test_stream_ndjson_end_to_end_and_connection_reuse(server: Server, clients: None) -> None:
    server.route("/api/chat")(_ollama_stream)
    url = server.url("/api/chat")
    for _ in range(2):
        async with open_stream("POST", url, json={"stream": True}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson"
            objects = [obj async for obj in iter_ndjson(response)]
        assert [o.get("message", {}).get("content") for o in objects] == [
            "Hé", "llo", " wörld", None
        ]  # fmt: skip
    # Both requests went over one kept-alive connection, now idle in the pool.
    assert (len(server.requests), server.connections_opened) == (2, 1)
    connections = pool_connections(url)
    assert len(connections) == 1 and connections[0].is_idle()


@pytest.mark.anyio
async def test_stream_status_error_is_retried_before_the_body(
    server: Server, clients: None
) -> None:
    @server.route("/s")
    async def s(request: Request, conn: Conn) -> None:
        if len(server.requests) == 1:
            await conn.respond(500, {"error": "boom"})
        else:
            await _ollama_stream(request, conn)

    async with open_stream("POST", server.url("/s"), retry=FAST_RETRY) as response:
        assert len([obj async for obj in iter_ndjson(response)]) == 4
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_connection_cut_mid_stream_is_not_retried(server: Server, clients: None) -> None:
    @server.route("/s")
    async def s(request: Request, conn: Conn) -> None:
        await conn.start()
        await conn.chunk(b'{"message":{"content":"Hi"},"done":false}\n')
        await anyio.sleep(0.05)
        conn.close()  # mid-body: the chunked encoding never ends

    received = []
    with pytest.raises(LLMConnectionError) as info:
        async with open_stream("POST", server.url("/s"), retry=FAST_RETRY) as response:
            async for obj in iter_ndjson(response):
                received.append(obj)
    assert received == [{"message": {"content": "Hi"}, "done": False}]
    assert "connection lost mid-response" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError | httpx.ReadError)
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_connection_reset_mid_stream(server: Server, clients: None) -> None:
    @server.route("/s")
    async def s(request: Request, conn: Conn) -> None:
        await conn.start(content_type="text/event-stream")
        await conn.chunk(b'data: {"choices":[]}\n\n')
        await anyio.sleep(0.05)
        conn.reset()

    with pytest.raises(LLMConnectionError, match="connection lost mid-response"):
        async with open_stream("POST", server.url("/s"), retry=FAST_RETRY) as response:
            async for _ in iter_sse_json(response):
                pass
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_error_event_mid_stream_is_not_retried(server: Server, clients: None) -> None:
    @server.route("/s")
    async def s(request: Request, conn: Conn) -> None:
        await conn.start(content_type="text/event-stream")
        await conn.chunk(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n')
        await conn.chunk(b'data: {"error":{"code":500,"message":"boom","type":"server_error"}}\n\n')
        await conn.end()

    with pytest.raises(LLMAPIError) as info:
        async with open_stream("POST", server.url("/s"), retry=FAST_RETRY) as response:
            async for _ in iter_sse_json(response, provider="llamacpp"):
                pass
    assert (info.value.status, info.value.error_type) == (200, "server_error")
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_read_timeout_mid_stream(server: Server, clients: None) -> None:
    @server.route("/s")
    async def s(request: Request, conn: Conn) -> None:
        await conn.start()
        await conn.chunk(b'{"done":false}\n')
        await conn.wait_for_client_to_close()

    with pytest.raises(LLMTimeoutError, match="in the middle of the response") as info:
        async with open_stream("POST", server.url("/s"), timeouts=Timeouts(read=0.3)) as response:
            async for _ in iter_ndjson(response):
                pass
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    await eventually(lambda: server.connections_open == 0)


async def _endless_stream(request: Request, conn: Conn) -> None:
    await conn.start()
    await conn.chunk(b'{"n":0}\n')
    # Then nothing until the client goes away.
    await conn.wait_for_client_to_close()


@pytest.mark.anyio
async def test_break_releases_the_connection(server: Server, clients: None) -> None:
    server.route("/s")(_endless_stream)
    url = server.url("/s")
    async with open_stream("POST", url) as response:
        async for _ in iter_ndjson(response):
            break  # no aclosing() needed: nothing is left to finalise
    assert pool_connections(url) == []
    await eventually(lambda: server.connections_open == 0)
    # The pool still works.
    server.route("/ok")(lambda request, conn: conn.respond(200, {"ok": 1}))
    assert await request_json("GET", server.url("/ok")) == {"ok": 1}


@pytest.mark.anyio
async def test_cancellation_releases_the_connection(server: Server, clients: None) -> None:
    server.route("/s")(_endless_stream)
    url = server.url("/s")
    received = []
    with anyio.CancelScope() as scope:
        async with open_stream("POST", url) as response:
            async for obj in iter_ndjson(response):
                received.append(obj)
                # Cancel while the next read is blocked waiting for the server.
                scope.deadline = anyio.current_time() + 0.05
    assert scope.cancelled_caught
    assert received == [{"n": 0}]
    assert pool_connections(url) == []
    await eventually(lambda: server.connections_open == 0)


@pytest.mark.anyio
async def test_cancellation_while_waiting_for_the_response(server: Server, clients: None) -> None:
    @server.route("/s")
    async def s(request: Request, conn: Conn) -> None:
        await conn.wait_for_client_to_close()

    url = server.url("/s")
    with anyio.move_on_after(0.2):
        async with open_stream("POST", url):
            pytest.fail("no response was sent")
    assert pool_connections(url) == []
    await eventually(lambda: server.connections_open == 0)


# --------------------------------------------------------------------------- the pool


@pytest.mark.anyio
async def test_one_client_per_host_in_a_loop(server: Server, clients: None) -> None:
    client = get_client(server.url("/a"))
    assert get_client(server.url("/b?x=1")) is client
    assert get_client(f"http://localhost:{server.port}/") is not client
    assert get_client("https://127.0.0.1:443/") is get_client("https://127.0.0.1/")
    assert get_client("http://[::1]:11434/") is not get_client("http://[::1]:11435/")
    await close_clients()
    assert client.is_closed
    assert get_client(server.url("/a")) is not client


def test_clients_are_per_event_loop(server: Server) -> None:
    seen: list[httpx.AsyncClient] = []

    async def use_pool() -> None:
        client = get_client(server.url("/"))
        assert get_client(server.url("/")) is client
        seen.append(client)
        await close_clients()

    anyio.run(use_pool, backend="asyncio")
    anyio.run(use_pool, backend="asyncio")
    anyio.run(use_pool, backend="trio")
    assert len({id(client) for client in seen}) == 3
    assert all(client.is_closed for client in seen)


@pytest.mark.anyio
async def test_concurrent_callers_share_the_client(server: Server, clients: None) -> None:
    @server.route("/x")
    async def x(request: Request, conn: Conn) -> None:
        await anyio.sleep(0.05)
        await conn.respond(200, {"ok": 1})

    results: list[Any] = []

    async def call() -> None:
        results.append(await request_json("GET", server.url("/x")))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(call)
    assert results == [{"ok": 1}] * 5
    assert len(server.requests) == 5


@pytest.mark.anyio
@pytest.mark.parametrize("url", ["ftp://host/x", "/relative/path", "http://"])
async def test_bad_urls(clients: None, url: str) -> None:
    with pytest.raises(LLMConnectionError):
        await request_json("GET", url)


@pytest.mark.anyio
async def test_cookies_are_not_shared(server: Server, clients: None) -> None:
    @server.route("/c")
    async def c(request: Request, conn: Conn) -> None:
        await conn.respond(
            200, {"cookie": request.headers.get("cookie")}, headers={"set-cookie": "s=1; Path=/"}
        )

    assert await request_json("GET", server.url("/c")) == {"cookie": None}
    assert await request_json("GET", server.url("/c")) == {"cookie": None}


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"RETRY-AFTER": " 2 "}, 2.0),
        ({"retry-after-ms": "200", "retry-after": "30"}, 0.2),
        ({"retry-after-ms": "junk", "retry-after": "30"}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "-1"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "1e3"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(headers, now=now) == expected
    assert parse_retry_after(httpx.Headers(headers), now=now) == expected


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
@settings(database=None, deadline=None)
def test_parse_retry_after_seconds_and_ms_round_trip(seconds: float) -> None:
    text = f"{seconds:.6f}"
    assert parse_retry_after({"Retry-After": text}) == float(text)
    text = f"{seconds * 1000:.6f}"
    assert parse_retry_after({"retry-after-ms": text}) == pytest.approx(float(text) / 1000)


@given(st.integers(min_value=0, max_value=10**10), st.integers(min_value=-(10**6), max_value=10**6))
@settings(database=None, deadline=None)
def test_parse_retry_after_http_date(when: int, offset: int) -> None:
    date = email.utils.formatdate(when, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=when - offset) == max(0, offset)


@given(st.dictionaries(st.sampled_from(["retry-after", "Retry-After-Ms", "x"]), st.text()))
@settings(database=None, deadline=None)
def test_parse_retry_after_never_raises(headers: dict[str, str]) -> None:
    value = parse_retry_after(headers)
    assert value is None or (math.isfinite(value) and value >= 0)


@given(st.integers(min_value=0, max_value=10_000))
@settings(database=None, deadline=None)
def test_backoff_is_bounded(attempt: int) -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=8.0, jitter=0.25)
    delay = policy.backoff(attempt)
    assert (
        0.75 * min(8.0, 0.5 * 2 ** min(attempt, 10))
        <= delay
        <= min(8.0, 0.5 * 2 ** min(attempt, 10))
    )


def test_policies_and_timeouts() -> None:
    assert DEFAULT_RETRY.max_retries == 2
    assert DEFAULT_RETRY.retry_statuses == {408, 409, 429, 500, 502, 503, 504, 529}
    assert NO_RETRY.max_retries == 0
    for bad in ({"max_retries": -1}, {"jitter": 2.0}, {"backoff_base": -1.0}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)
    timeout = Timeouts(connect=0.5, read=None, write=2, pool=3).to_httpx()
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (0.5, None, 2, 3)
    assert Timeouts().read == 300.0


# --------------------------------------------------------------------------- pool size, body path


def test_pool_admits_many_connections_within_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resource

    from llmfactory.api import transport

    def limits() -> httpx.Limits:
        pool = transport._new_client()._transport._pool  # type: ignore[attr-defined]
        return httpx.Limits(max_connections=pool._max_connections,
                            max_keepalive_connections=pool._max_keepalive_connections)

    monkeypatch.setattr(resource, "getrlimit", lambda _what: (65536, 65536))
    assert limits().max_connections == transport.MAX_CONNECTIONS_PER_HOST == 1000
    assert limits().max_keepalive_connections == 16
    monkeypatch.setattr(resource, "getrlimit", lambda _what: (1024, 65536))
    assert limits().max_connections == 512  # half the soft limit
    monkeypatch.setattr(resource, "getrlimit", lambda _what: (resource.RLIM_INFINITY,) * 2)
    assert limits().max_connections == 1000


@pytest.mark.anyio
async def test_a_compressed_body_is_decoded(server: Server, clients: None) -> None:
    import gzip

    lines = b'{"message":{"content":"Hi"}}\n{"done":true}\n'

    @server.route("/gz")
    async def gz(request: Request, conn: Conn) -> None:
        await conn.respond(200, gzip.compress(lines), headers={"content-encoding": "gzip"},
                           content_type="application/x-ndjson")

    @server.route("/plain")
    async def plain(request: Request, conn: Conn) -> None:
        await conn.respond(200, lines, content_type="application/x-ndjson")

    for path in ("/gz", "/plain"):
        async with open_stream("POST", server.url(path), json={}) as response:
            assert [obj async for obj in iter_ndjson(response)] == [
                {"message": {"content": "Hi"}}, {"done": True}
            ]
            # Read to its end: iterating again yields nothing (and does not raise).
            assert [chunk async for chunk in response] == []
