"""Loopback HTTP servers for tests: the shared machinery.

A :class:`LoopbackServer` is an aiohttp application running on its **own asyncio
loop in a background thread**, bound to ``127.0.0.1`` (or ``::1``) on a free port.
Because it owns its loop, a test may talk to it from plain sync code, from
asyncio or from trio.

Every server

* records each request (:attr:`LoopbackServer.requests`, a snapshot list of
  :class:`RecordedRequest`),
* answers from a tiny route table (``add_route``) with a protocol-specific 404/405
  fallback, and
* applies **faults** pushed with :meth:`LoopbackServer.push_fault` to the next
  matching request(s).

Faults
------
A :class:`Fault` is a frozen value built by one of its constructors and combined
with ``|`` (the right-hand side's non-default fields win)::

    server.push_fault(Fault.http_error(503))                      # next request
    server.push_fault(Fault.rate_limited(retry_after=1), path="/v1/chat/completions")
    server.push_fault(Fault.drip(0.01) | Fault.cut_after(3), times=2)
    server.push_fault(Fault.stall_before_headers(5), times=None)  # every request until cleared

The phases a fault can touch, in order: delay before headers
(``stall_before_headers``); dropping the connection without a response
(``disconnect``); replacing the response (``http_error``/``rate_limited``/
``html``/``big_body``); the content type and bytes of the normal response
(``wrong_content_type``/``invalid_utf8``); a delay after the headers
(``stall_after_headers``); and the body chunk by chunk (``drip``/``drip_bytes``/
``cut_after``/``malformed_line``/``error_mid_stream``). A "chunk" is one protocol
frame: one NDJSON line, one SSE event, or the whole body of a non-streamed reply.
A replaced response skips the route handler, so scripted replies are not consumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import enum
import json
import re
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, TypeVar, overload

from aiohttp import web

__all__ = [
    "PIECE",
    "PROTOCOL_DEFAULT",
    "CannedResponse",
    "Fault",
    "Handler",
    "LoopbackServer",
    "RecordedRequest",
    "Reply",
    "RequestContext",
    "dumpb",
    "dumps",
    "frame_template",
    "iter_words",
]

JSONValue = Any
_S = TypeVar("_S", bound="LoopbackServer")


def dumps(obj: JSONValue) -> str:
    """Compact JSON with raw UTF-8 (as Go's ``encoding/json`` and most servers write it)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def dumpb(obj: JSONValue) -> bytes:
    """:func:`dumps` encoded as UTF-8."""
    return dumps(obj).encode()


PIECE = "\x00PIECE\x00"
"""Placeholder string for :func:`frame_template`."""
_PIECE_JSON = dumpb(PIECE)


def frame_template(obj: JSONValue, before: bytes = b"", after: bytes = b"") -> tuple[bytes, bytes]:
    """Split ``before + json(obj) + after`` around the one ``PIECE`` string value.

    A frame for a text piece is then ``prefix + dumpb(piece) + suffix``: one JSON
    encoding of the piece instead of the whole object (20 000 frames stay cheap).
    """
    data = dumpb(obj)
    prefix, found, suffix = data.partition(_PIECE_JSON)
    if not found:
        raise ValueError("template has no PIECE placeholder")
    return before + prefix, suffix + after


# --------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    ``headers`` has lower-cased names (repeated headers joined with ``", "``);
    ``query`` keeps the last value of a repeated parameter; ``json`` is the parsed
    body, or ``None`` when the body is empty or not JSON.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    json: JSONValue

    @property
    def body_bytes(self) -> bytes:
        """The raw request body (alias of ``body``)."""
        return self.body

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header by case-insensitive name."""
        return self.headers.get(name.lower(), default)


# --------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------


class _Default(enum.Enum):
    DEFAULT = "protocol-default"


PROTOCOL_DEFAULT = _Default.DEFAULT
"""Sentinel body for :meth:`Fault.http_error`: the protocol's own error shape for the status."""

ErrorBody = bytes | str | Mapping[str, Any] | None | _Default


@dataclass(frozen=True)
class CannedResponse:
    """A whole response that replaces the route's answer.

    ``body``: ``PROTOCOL_DEFAULT`` (the server's error shape for ``status``), a mapping
    (sent as JSON), ``str``/``bytes`` (sent as is) or ``None`` (empty body).
    """

    status: int
    body: ErrorBody = PROTOCOL_DEFAULT
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    message: str | None = None  # message for PROTOCOL_DEFAULT bodies


def _format_retry_after(value: float | int | datetime | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return email.utils.format_datetime(value.astimezone(timezone.utc), usegmt=True)
    if isinstance(value, bool):
        raise TypeError("retry_after must be a number, a datetime or a string")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value


@dataclass(frozen=True)
class Fault:
    """What to do wrong on one or more requests. Build with the class methods, combine with ``|``.

    Matching: ``path`` is an exact path or a prefix ending in ``*`` (``None`` = any);
    ``method`` an HTTP method (``None`` = any). ``times`` is how many matching
    requests it applies to (``None`` = all of them, until ``clear_faults``).
    """

    path: str | None = None
    method: str | None = None
    times: int | None = 1
    # before the response
    delay_before_headers: float = 0.0
    disconnect: bool = False
    response: CannedResponse | None = None
    big_body_bytes: int | None = None
    # the normal response, changed
    content_type: str | None = None
    corrupt_utf8: bool = False
    # after the headers, chunk by chunk
    delay_after_headers: float = 0.0
    chunk_delay: float = 0.0
    drip_piece_bytes: int | None = None
    cut_after_chunks: int | None = None
    reset: bool = True
    malformed_after_chunks: int | None = None
    error_after_chunks: int | None = None
    error_payload: JSONValue = None

    # ---- combination -------------------------------------------------------------------

    def __or__(self, other: Fault) -> Fault:
        """Combine two faults; the right-hand side's non-default fields win."""
        if not isinstance(other, Fault):
            return NotImplemented
        defaults = Fault()
        changes = {
            f.name: getattr(other, f.name)
            for f in fields(Fault)
            if getattr(other, f.name) != getattr(defaults, f.name)
        }
        return replace(self, **changes)

    def on(
        self, path: str | None = None, *, method: str | None = None, times: int | None = 1
    ) -> Fault:
        """This fault restricted to ``path``/``method``, applied ``times`` times."""
        return replace(self, path=path, method=method, times=times)

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to a request."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path is None:
            return True
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path

    @property
    def chunkwise(self) -> bool:
        """Whether the body has to be written frame by frame for this fault."""
        return (
            self.chunk_delay > 0
            or self.drip_piece_bytes is not None
            or self.cut_after_chunks is not None
            or self.malformed_after_chunks is not None
            or self.error_after_chunks is not None
        )

    # ---- constructors ------------------------------------------------------------------

    @classmethod
    def http_error(
        cls,
        status: int,
        body: ErrorBody = PROTOCOL_DEFAULT,
        *,
        headers: Mapping[str, str] | None = None,
        retry_after: float | int | datetime | str | None = None,
        retry_after_ms: int | None = None,
        content_type: str | None = None,
        message: str | None = None,
    ) -> Fault:
        """Answer ``status`` instead of the real response.

        ``body`` defaults to the protocol's error shape (Ollama ``{"error": "…"}``,
        OpenAI ``{"error": {…}}``, Anthropic ``{"type": "error", …}``), optionally with
        ``message``. ``retry_after`` becomes a ``Retry-After`` header: a number of
        seconds (floats allowed: non-standard but honoured by the SDKs), a datetime
        (sent as an HTTP-date) or a raw string. ``retry_after_ms`` sets the
        non-standard ``retry-after-ms`` header.
        """
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = _format_retry_after(retry_after)
        if retry_after_ms is not None:
            hdrs["retry-after-ms"] = str(retry_after_ms)
        return cls(
            response=CannedResponse(
                status=status, body=body, headers=hdrs, content_type=content_type, message=message
            )
        )

    @classmethod
    def rate_limited(
        cls,
        retry_after: float | int | datetime | str | None = 1,
        *,
        status: int = 429,
        body: ErrorBody = PROTOCOL_DEFAULT,
    ) -> Fault:
        """429 with the protocol's rate-limit error body and ``Retry-After``."""
        return cls.http_error(status, body, retry_after=retry_after)

    @classmethod
    def html(cls, status: int = 200, body: str | None = None) -> Fault:
        """An HTML page instead of the API answer (a captive portal, a proxy's error page)."""
        page = body or (
            "<!DOCTYPE html>\n<html><head><title>Gateway</title></head>"
            "<body><h1>Please sign in to continue</h1></body></html>\n"
        )
        return cls(
            response=CannedResponse(
                status=status, body=page, content_type="text/html; charset=utf-8"
            )
        )

    @classmethod
    def big_body(cls, n_bytes: int) -> Fault:
        """200 ``application/json`` with a valid JSON object of exactly ``n_bytes`` bytes.

        The body is ``{"padding":"xxx…"}``, generated lazily and sent chunked in 64 KiB
        pieces, so tens of MiB cost no memory.
        """
        if n_bytes < 14:
            raise ValueError("big_body needs at least 14 bytes")
        return cls(big_body_bytes=n_bytes)

    @classmethod
    def disconnect_now(cls, *, reset: bool = True) -> Fault:
        """Read the request, then drop the connection without any response.

        ``reset=True`` sends a TCP RST (``ECONNRESET`` for the client); ``False`` a FIN
        (the client sees "server disconnected without sending a response").
        """
        return cls(disconnect=True, reset=reset)

    @classmethod
    def stall_before_headers(cls, seconds: float) -> Fault:
        """Accept the request and send nothing for ``seconds`` (then answer normally)."""
        return cls(delay_before_headers=seconds)

    @classmethod
    def stall_after_headers(cls, seconds: float) -> Fault:
        """Send the status line and headers, then nothing for ``seconds``."""
        return cls(delay_after_headers=seconds)

    @classmethod
    def drip(cls, delay_per_chunk: float) -> Fault:
        """Sleep ``delay_per_chunk`` seconds before each chunk (frame)."""
        return cls(chunk_delay=delay_per_chunk)

    @classmethod
    def drip_bytes(cls, delay_per_piece: float, piece_bytes: int = 1) -> Fault:
        """Write the body ``piece_bytes`` at a time, sleeping ``delay_per_piece`` before each."""
        if piece_bytes < 1:
            raise ValueError("piece_bytes must be at least 1")
        return cls(chunk_delay=delay_per_piece, drip_piece_bytes=piece_bytes)

    @classmethod
    def cut_after(cls, n_chunks: int, *, reset: bool = True) -> Fault:
        """Send ``n_chunks`` frames, then abort the TCP connection.

        ``reset=True`` (default) aborts with an RST; ``False`` closes with a FIN
        mid-body (an incomplete chunked or Content-Length body for the client).
        Frames already written are flushed to the socket before the abort.
        """
        return cls(cut_after_chunks=n_chunks, reset=reset)

    @classmethod
    def malformed_line(cls, after_n_chunks: int = 1) -> Fault:
        """Insert one broken frame (truncated JSON) after ``after_n_chunks`` frames."""
        return cls(malformed_after_chunks=after_n_chunks)

    @classmethod
    def error_mid_stream(cls, after_n_chunks: int = 1, error_payload: JSONValue = None) -> Fault:
        """After ``after_n_chunks`` frames, send the protocol's mid-stream error frame and end.

        Ollama: ``{"error":"…"}`` line; OpenAI-compatible: ``data: {"error":{…}}``;
        Anthropic: ``event: error`` with ``overloaded_error``. ``error_payload`` replaces
        the JSON document of that frame.
        """
        return cls(error_after_chunks=after_n_chunks, error_payload=error_payload)

    @classmethod
    def wrong_content_type(cls, content_type: str = "text/plain; charset=utf-8") -> Fault:
        """The normal body, labelled with another ``Content-Type``."""
        return cls(content_type=content_type)

    @classmethod
    def invalid_utf8(cls) -> Fault:
        """The normal body with the bytes ``\\xff\\xfe`` inserted at the start of the
        first generated text (inside its JSON string); falls back to the start of the
        first frame when the reply has no text."""
        return cls(corrupt_utf8=True)


# --------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------


def _default_error_chunk(payload: JSONValue) -> bytes:
    return dumpb(payload if payload is not None else {"error": "internal error"}) + b"\n"


@dataclass
class Reply:
    """A response ready to write: status, headers and pre-encoded frames.

    ``streaming`` replies use chunked transfer encoding (no Content-Length);
    others send a Content-Length. ``error_chunk`` frames a mid-stream error for
    the protocol; ``malformed_chunk`` is the protocol's broken frame;
    ``text_target`` is ``(frame index, bytes)`` locating the first generated text
    (a JSON string literal, quotes included) for :meth:`Fault.invalid_utf8`.
    """

    status: int = 200
    content_type: str | None = "application/json; charset=utf-8"
    chunks: Sequence[bytes] = ()
    headers: dict[str, str] = field(default_factory=dict)
    streaming: bool = False
    error_chunk: Callable[[JSONValue], bytes] = _default_error_chunk
    malformed_chunk: bytes = b'{"model":"broken","created_at":\n'
    text_target: tuple[int, bytes] | None = None

    @classmethod
    def json(
        cls,
        obj: JSONValue,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json; charset=utf-8",
    ) -> Reply:
        """A JSON document."""
        return cls(
            status=status,
            content_type=content_type,
            chunks=(dumpb(obj),),
            headers=dict(headers or {}),
        )

    @classmethod
    def text(
        cls,
        text: str | bytes,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = "text/plain; charset=utf-8",
    ) -> Reply:
        """A text (or raw bytes) body."""
        data = text.encode() if isinstance(text, str) else text
        return cls(
            status=status,
            content_type=content_type,
            chunks=(data,) if data else (),
            headers=dict(headers or {}),
        )


class _BigBody(Sequence[bytes]):
    """``{"padding":"xxx…"}`` of exactly ``size`` bytes, as lazily built 64 KiB pieces."""

    PIECE = 64 * 1024

    def __init__(self, size: int) -> None:
        self._size = size
        self._prefix = b'{"padding":"'
        self._suffix = b'"}'

    def __len__(self) -> int:
        return max(1, -(-self._size // self.PIECE))

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(index)
        start = index * self.PIECE
        end = min(self._size, start + self.PIECE)
        out = bytearray(b"x" * (end - start))
        # overlay the JSON prefix / suffix where they fall
        for offset, token in ((0, self._prefix), (self._size - len(self._suffix), self._suffix)):
            lo, hi = max(start, offset), min(end, offset + len(token))
            if lo < hi:
                out[lo - start : hi - start] = token[lo - offset : hi - offset]
        return bytes(out)


# --------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------


@dataclass
class RequestContext:
    """What a route handler gets: the aiohttp request, the recorded copy, path params."""

    request: web.Request
    recorded: RecordedRequest
    params: dict[str, str]
    fault: Fault | None

    @property
    def json(self) -> JSONValue:
        """The parsed JSON body (``None`` if empty or invalid)."""
        return self.recorded.json

    @property
    def body(self) -> bytes:
        """The raw body."""
        return self.recorded.body

    def header(self, name: str) -> str | None:
        """A request header (case-insensitive)."""
        return self.recorded.header(name)


Handler = Callable[[RequestContext], Awaitable[Reply]]

_PARAM = re.compile(r"\{(\w+)(?::([^}]+))?\}")


def _compile_path(path: str) -> re.Pattern[str]:
    pattern = ""
    pos = 0
    for m in _PARAM.finditer(path):
        pattern += re.escape(path[pos : m.start()])
        pattern += f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})"
        pos = m.end()
    pattern += re.escape(path[pos:])
    return re.compile(pattern)


@dataclass
class _Route:
    path: str
    pattern: re.Pattern[str]
    methods: dict[str, Handler]


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class LoopbackServer:
    """Base class: an aiohttp app on its own loop/thread, with recording and faults.

    Subclasses register routes in ``__init__`` with :meth:`add_route` and override
    :meth:`error_reply`, :meth:`not_found_reply` and :meth:`method_not_allowed_reply`
    for their protocol's shapes.

    Use as a context manager (``with OllamaServer() as s: …``) or call
    :meth:`start`/:meth:`stop`. The recorded requests, scripted replies, models and
    queued faults live on this object, so they survive :meth:`restart`.
    """

    #: Whether a GET route also answers HEAD (Express does; gin and FastAPI do not).
    auto_head: bool = False

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 2048,
        write_batch_bytes: int = 16 * 1024,
        shutdown_timeout: float = 0.25,
        start_timeout: float = 10.0,
    ) -> None:
        self._bind_host = host
        self._requested_port = port
        self._port: int | None = None
        self.backlog = backlog
        #: Without per-chunk faults, consecutive frames are written in batches of this
        #: many bytes (0: one write per frame). Clients see the same bytes either way.
        self.write_batch_bytes = write_batch_bytes
        self._shutdown_timeout = shutdown_timeout
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[list[Any]] = []  # [fault, remaining or None]
        self._routes: list[_Route] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread_error: BaseException | None = None
        self._active: set[asyncio.Task[Any]] = set()
        self._handler_errors: list[Exception] = []
        #: Whether :meth:`stop` raises when a route handler crashed (a fake-server bug).
        self.raise_handler_errors = True
        self.default_headers: dict[str, str] = {}

    # ---- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (kept after :meth:`stop` so :meth:`restart` can rebind it)."""
        if self._port is None:
            raise RuntimeError("server was never started")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` or ``[::1]:PORT``."""
        h = f"[{self._bind_host}]" if ":" in self._bind_host else self._bind_host
        return f"{h}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        """Whether the server thread is up."""
        return self._thread is not None and self._thread.is_alive()

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self: _S) -> _S:
        """Bind and serve in a background thread; returns ``self``."""
        if self.running:
            raise RuntimeError("server already running")
        port = self._port if self._port is not None else self._requested_port
        sock = _bind(self._bind_host, port)
        self._port = sock.getsockname()[1]
        self._start_thread(sock)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop: refuse new connections, cut in-flight requests (streams included), join.

        Idle keep-alive connections are closed, running handlers are cancelled (their
        clients see the connection close mid-response). Bounded by ``timeout``.
        """
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} did not stop within {timeout} s")
        self._thread = None
        self._loop = None
        self._stop_event = None
        error, self._thread_error = self._thread_error, None
        if error is not None:
            raise RuntimeError(f"{type(self).__name__} thread failed") from error
        with self._lock:
            crashed, self._handler_errors = self._handler_errors, []
        if crashed and self.raise_handler_errors:
            raise RuntimeError(
                f"{type(self).__name__}: {len(crashed)} request handler(s) crashed "
                "(answered 500); first error attached"
            ) from crashed[0]

    @property
    def handler_errors(self) -> list[Exception]:
        """Exceptions raised by route handlers since the last :meth:`stop` (should be none)."""
        with self._lock:
            return list(self._handler_errors)

    def stop_and_keep_port(self, timeout: float = 5.0) -> None:
        """Go down (connections refused) but remember the port for :meth:`restart`."""
        self.stop(timeout)

    def restart(self: _S, *, attempts: int = 50, delay: float = 0.02) -> _S:
        """Come back on the same port (stopping first if running).

        State (models, scripts, faults, recorded requests) is kept. Rebinding retries
        briefly in case the kernel still holds the port.
        """
        self.stop()
        last: OSError | None = None
        for _ in range(attempts):
            try:
                sock = _bind(self._bind_host, self.port)
            except OSError as exc:
                last = exc
                threading.Event().wait(delay)
                continue
            self._start_thread(sock)
            return self
        raise RuntimeError(f"could not rebind port {self.port}") from last

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_thread(self, sock: socket.socket) -> None:
        ready = threading.Event()
        self._thread_error = None
        thread = threading.Thread(
            target=self._thread_main,
            args=(sock, ready),
            name=f"{type(self).__name__}:{self._port}",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        if not ready.wait(self._start_timeout) or self._thread_error is not None:
            self.stop()
            raise RuntimeError(f"{type(self).__name__} failed to start")

    def _thread_main(self, sock: socket.socket, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(sock, ready))
        except BaseException as exc:  # never let an exception escape the thread
            self._thread_error = exc
        finally:
            sock.close()  # no-op if the asyncio server already closed it
            ready.set()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self._shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.SockSite(runner, sock, backlog=self.backlog)
            await site.start()
            ready.set()
            await self._stop_event.wait()
            await site.stop()
            tasks = set(self._active)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)
        finally:
            await runner.cleanup()

    # ---- recording ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far (oldest first)."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The recorded requests for one path (and method)."""
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]

    def count(self, path: str, method: str | None = None) -> int:
        """How many requests hit ``path`` (and ``method``)."""
        return len(self.requests_to(path, method))

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request (``IndexError`` if none)."""
        with self._lock:
            return self._requests[-1]

    def reset(self) -> None:
        """Forget recorded requests and queued faults (subclasses also drop scripts)."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()

    # ---- faults ------------------------------------------------------------------------

    def push_fault(
        self,
        fault: Fault,
        *,
        path: str | None = None,
        method: str | None = None,
        times: int | _Default | None = PROTOCOL_DEFAULT,
    ) -> None:
        """Queue ``fault`` for the next matching request(s) (FIFO among matching faults).

        ``path``/``method``/``times`` override the fault's own filter when given.
        """
        if path is not None:
            fault = replace(fault, path=path)
        if method is not None:
            fault = replace(fault, method=method)
        if not isinstance(times, _Default):
            fault = replace(fault, times=times)
        if fault.times is not None and fault.times < 1:
            raise ValueError("times must be None or at least 1")
        with self._lock:
            self._faults.append([fault, fault.times])

    def clear_faults(self) -> None:
        """Drop all queued faults."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults still queued."""
        with self._lock:
            return [entry[0] for entry in self._faults]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for i, entry in enumerate(self._faults):
                fault: Fault = entry[0]
                if fault.matches(method, path):
                    if entry[1] is not None:
                        entry[1] -= 1
                        if entry[1] <= 0:
                            del self._faults[i]
                    return fault
        return None

    # ---- routes ------------------------------------------------------------------------

    def add_route(self, methods: str | Iterable[str], path: str, handler: Handler) -> None:
        """Register ``handler`` for ``methods`` on ``path`` (params: ``{name}``, ``{name:re}``)."""
        names = [methods] if isinstance(methods, str) else list(methods)
        for route in self._routes:
            if route.path == path:
                break
        else:
            route = _Route(path, _compile_path(path), {})
            self._routes.append(route)
        for name in names:
            route.methods[name.upper()] = handler

    def remove_route(self, path: str) -> None:
        """Unregister every method on ``path``."""
        self._routes = [r for r in self._routes if r.path != path]

    def _resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """(handler, params, path_known)."""
        for route in self._routes:
            m = route.pattern.fullmatch(path)
            if m is None:
                continue
            handler = route.methods.get(method)
            if handler is None and method == "HEAD" and self.auto_head:
                handler = route.methods.get("GET")
            return handler, m.groupdict(), True
        return None, {}, False

    # ---- protocol hooks (override) -----------------------------------------------------

    def error_reply(self, status: int, message: str | None = None) -> Reply:
        """The protocol's error response for ``status`` (used by ``Fault.http_error``)."""
        return Reply.json({"error": message or _reason(status)}, status)

    async def not_found_reply(self, ctx: RequestContext) -> Reply:
        """Answer for an unknown path."""
        return Reply.text("404 page not found", 404)

    async def method_not_allowed_reply(self, ctx: RequestContext) -> Reply:
        """Answer for a known path with the wrong method."""
        return Reply.text("405 method not allowed", 405)

    # ---- request handling --------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
        try:
            return await self._handle(request)
        except ConnectionError:
            # The client went away (e.g. it timed out during a stall). An unprepared
            # response makes aiohttp take its quiet "premature disconnection" path.
            return web.StreamResponse()
        except Exception as exc:  # a bug in the fake server: make it loud
            with self._lock:
                self._handler_errors.append(exc)
            raise
        finally:
            if task is not None:
                self._active.discard(task)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        parsed: JSONValue = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=headers,
            body=body,
            json=parsed,
        )
        with self._lock:
            self._requests.append(recorded)
        fault = self._take_fault(request.method, request.path)
        handler, params, known = self._resolve(request.method, request.path)
        ctx = RequestContext(request, recorded, params, fault)

        reply: Reply | None = None
        if fault is not None:
            if fault.delay_before_headers > 0:
                await asyncio.sleep(fault.delay_before_headers)
            if fault.disconnect:
                await _abort(request, reset=fault.reset)
                return web.StreamResponse()
            if fault.response is not None:
                reply = self._canned(fault.response)
            elif fault.big_body_bytes is not None:
                reply = Reply(
                    content_type="application/json",
                    chunks=_BigBody(fault.big_body_bytes),
                    streaming=True,
                )
        if reply is None:
            if handler is not None:
                reply = await handler(ctx)
            elif known:
                reply = await self.method_not_allowed_reply(ctx)
            else:
                reply = await self.not_found_reply(ctx)
        return await self._write(request, reply, fault)

    def _canned(self, canned: CannedResponse) -> Reply:
        body = canned.body
        if isinstance(body, _Default):
            reply = self.error_reply(canned.status, canned.message)
        elif body is None:
            reply = Reply.text(b"", canned.status, content_type=None)
        elif isinstance(body, bytes | str):
            reply = Reply.text(body, canned.status)
        else:
            reply = Reply.json(dict(body), canned.status)
        if canned.content_type is not None:
            reply.content_type = canned.content_type
        reply.headers.update(canned.headers)
        return reply

    async def _write(
        self, request: web.Request, reply: Reply, fault: Fault | None
    ) -> web.StreamResponse:
        chunks: Sequence[bytes] = reply.chunks
        content_type = reply.content_type
        if fault is not None and fault.content_type is not None:
            content_type = fault.content_type
        if fault is not None and fault.corrupt_utf8 and len(chunks) > 0:
            chunks = list(chunks)
            if reply.text_target is not None:
                idx, target = reply.text_target
                chunks[idx] = chunks[idx].replace(target, target[:1] + b"\xff\xfe" + target[1:], 1)
            else:
                chunks[0] = b"\xff\xfe" + chunks[0]

        headers = {**self.default_headers, **reply.headers}
        resp = web.StreamResponse(status=reply.status, headers=headers)
        if content_type is not None:
            resp.headers["Content-Type"] = content_type
        rewrites_body = fault is not None and (
            fault.malformed_after_chunks is not None or fault.error_after_chunks is not None
        )
        if reply.streaming or rewrites_body:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = sum(len(c) for c in chunks)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        if fault is not None and fault.delay_after_headers > 0:
            await asyncio.sleep(fault.delay_after_headers)

        if fault is None or not fault.chunkwise:
            await self._write_batched(resp, chunks)
            return resp

        n = len(chunks)
        for i in range(n + 1):
            if fault.cut_after_chunks == i:
                await _abort(request, reset=fault.reset)
                return resp
            if fault.error_after_chunks == i:
                await resp.write(reply.error_chunk(fault.error_payload))
                return resp
            if fault.malformed_after_chunks == i:
                await resp.write(reply.malformed_chunk)
            if i == n:
                break
            chunk = chunks[i]
            if fault.drip_piece_bytes is not None:
                size = fault.drip_piece_bytes
                for start in range(0, len(chunk), size):
                    if fault.chunk_delay > 0:
                        await asyncio.sleep(fault.chunk_delay)
                    await resp.write(chunk[start : start + size])
            else:
                if fault.chunk_delay > 0:
                    await asyncio.sleep(fault.chunk_delay)
                await resp.write(chunk)
        return resp

    async def _write_batched(self, resp: web.StreamResponse, chunks: Sequence[bytes]) -> None:
        limit = self.write_batch_bytes
        if limit <= 0:
            for chunk in chunks:
                await resp.write(chunk)
            return
        batch: list[bytes] = []
        size = 0
        for chunk in chunks:
            batch.append(chunk)
            size += len(chunk)
            if size >= limit:
                await resp.write(b"".join(batch))
                batch, size = [], 0
        if batch:
            await resp.write(b"".join(batch))


async def _abort(request: web.Request, *, reset: bool) -> None:
    """Flush what was written, then drop the connection (RST if ``reset``, else FIN)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while transport.get_write_buffer_size() > 0 and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


def _reason(status: int) -> str:
    return _REASONS.get(status, f"HTTP {status}")


def iter_words(text: str) -> Iterator[str]:
    """Split text into word-sized pieces that concatenate back to ``text``."""
    yield from re.findall(r"\S+\s*|\s+", text)
