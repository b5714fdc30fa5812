"""Readers for what LLM servers send back: NDJSON and SSE streams, and error bodies.

The stream readers take any async iterable of ``bytes`` chunks (network reads,
split anywhere, even inside a line ending or a multi-byte UTF-8 character) and
yield parsed items:

* :func:`iter_ndjson` — one JSON object per line (Ollama ``/api/chat``).
* :func:`iter_sse` — Server-Sent Events per the WHATWG spec, as :class:`SSEEvent`.
* :func:`iter_sse_json` — SSE events whose ``data`` is JSON (OpenAI-compatible
  ``/v1/chat/completions``, Anthropic ``/v1/messages``), stopping at ``[DONE]``.

Each chunk is split into lines on bytes, its complete lines are decoded in one
go, and each line is parsed by the C JSON scanner, so the per-line cost is
little more than the JSON parse itself. The readers are plain async iterators
(not async generators): stopping early needs no ``aclosing``, though they have
an ``aclose()``. A line longer than
``max_line_bytes`` raises :class:`~llmfactory.errors.MalformedResponseError`
instead of growing a buffer without bound.

An error reported mid-stream (status already 200) raises
:class:`~llmfactory.errors.LLMAPIError` with ``status=200``. The same module
parses error bodies of every shape the servers use (:func:`parse_error_body`)
and picks the error class for a status and body (:func:`build_api_error`), so
that HTTP errors and mid-stream errors are classified by one function.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from llmfactory.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    LLMAPIError,
    MalformedResponseError,
    RateLimitError,
)

__all__ = [
    "BODY_EXCERPT_CHARS",
    "DEFAULT_MAX_LINE_BYTES",
    "ErrorDetails",
    "SSEEvent",
    "build_api_error",
    "iter_ndjson",
    "iter_sse",
    "iter_sse_json",
    "parse_error_body",
]

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
"""The longest line (or SSE event) a reader accepts by default: 16 MiB."""

BODY_EXCERPT_CHARS = 2000
"""How much of a server's body an error keeps in ``body``."""

_MESSAGE_CHARS = 500
_T = TypeVar("_T")


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorDetails:
    """What a server said about an error: its message and, when it said, type and code."""

    message: str
    error_type: str | None = None
    code: str | None = None


def parse_error_body(body: str | bytes | Mapping[str, Any]) -> ErrorDetails:
    """Read the message, type and code out of an error body of any known shape.

    Understands ``{"error": "text"}`` (Ollama, LM Studio),
    ``{"error": {"message", "type", "code"}}`` (OpenAI, llama.cpp, vLLM, Ollama
    ``/v1``), Anthropic's ``{"type": "error", "error": {"type", "message"}}``,
    vLLM's older flat ``{"object": "error", "message", "type", "code"}``,
    ``{"detail": …}`` (FastAPI servers), and HTML or plain text (the ``<title>``
    of an HTML page, or the text itself). Numeric codes become strings. Never
    raises; the message is bounded in length.
    """
    if isinstance(body, Mapping):
        obj: Mapping[str, Any] = body
    else:
        text = (body if isinstance(body, str) else bytes(body).decode("utf-8", "replace")).strip()
        if not text:
            return ErrorDetails(message="(empty response body)")
        parsed: object = None
        if text[0] in "{[":
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                parsed = None
        if not isinstance(parsed, Mapping):
            return ErrorDetails(message=_text_message(text))
        obj = parsed
    details = _details_from_object(obj)
    if details is None:
        return ErrorDetails(message=_bound(_compact_json(obj)))
    return details


def _details_from_object(obj: Mapping[str, Any]) -> ErrorDetails | None:
    err = obj.get("error")
    if isinstance(err, Mapping):
        message = err.get("message")
        if not isinstance(message, str) or not message:
            message = obj.get("message")
        if not isinstance(message, str) or not message:
            message = _compact_json(err)
        return ErrorDetails(
            message=_bound(message),
            error_type=_as_str(err.get("type")),
            code=_as_str(err.get("code")),
        )
    if isinstance(err, str) and err:
        return ErrorDetails(
            message=_bound(err), error_type=_as_str(obj.get("type")), code=_as_str(obj.get("code"))
        )
    message = obj.get("message")
    if isinstance(message, str) and message:
        error_type = _as_str(obj.get("type"))
        return ErrorDetails(
            message=_bound(message),
            error_type=None if error_type == "error" else error_type,
            code=_as_str(obj.get("code")),
        )
    detail = obj.get("detail")
    if detail is not None:
        text = detail if isinstance(detail, str) else _compact_json(detail)
        return ErrorDetails(message=_bound(text))
    if err is not None and err is not False:
        return ErrorDetails(message=_bound(_compact_json(err)))
    return None


_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]*>")


def _text_message(text: str) -> str:
    head = text[:4096]
    if head.startswith("<") and ("<html" in head.lower() or "<!doctype" in head.lower()):
        match = _TITLE_RE.search(head)
        text = match.group(1) if match and match.group(1).strip() else _TAG_RE.sub(" ", head)
    return _bound(" ".join(text.split()) or "(empty response body)")


def _bound(text: str, limit: int = _MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compact_json(obj: object) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)[:4096]
    except (TypeError, ValueError, RecursionError):
        return repr(obj)[:4096]


def _as_str(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else str(value)
    return None


_CONTEXT_TYPES = frozenset({"exceed_context_size_error", "context_length_exceeded"})
_CONTEXT_PHRASES = (
    "context length",
    "context_length",
    "context window",
    "context size",
    "maximum context",
    "prompt is too long",
)
_RATE_LIMIT_TYPES = frozenset({"rate_limit_error", "rate_limit_exceeded"})
_AUTH_TYPES = frozenset({"authentication_error", "permission_error", "invalid_api_key"})


def _is_context_error(status: int, details: ErrorDetails) -> bool:
    if details.error_type in _CONTEXT_TYPES or details.code in _CONTEXT_TYPES:
        return True
    if status not in (200, 400, 413):
        return False
    message = details.message.lower()
    return any(phrase in message for phrase in _CONTEXT_PHRASES)


def build_api_error(
    status: int,
    details: ErrorDetails,
    *,
    body: str = "",
    provider: str | None = None,
    url: str | None = None,
    retry_after: float | None = None,
    mid_stream: bool | None = None,
) -> LLMAPIError:
    """Make the right :class:`LLMAPIError` subclass for an error status and what the server said.

    401/403 → :class:`AuthenticationError`; 429 → :class:`RateLimitError`; a
    400/413 (or mid-stream, ``status=200``) error whose type, code or message
    says the context length was exceeded → :class:`ContextLengthExceededError`;
    anything else → :class:`LLMAPIError`. Mid-stream errors are also classified
    by their type (``rate_limit_error``, ``authentication_error``). ``mid_stream``
    (default: ``status < 300``) says the error arrived inside a successful
    response that had started streaming. The message
    says who answered, what they said, and what to do. ``body`` is stored
    bounded to :data:`BODY_EXCERPT_CHARS`.
    """
    who = provider or "the server"
    where = f" at {url}" if url else ""
    kinds = {details.error_type, details.code}
    cls: type[LLMAPIError]
    if status in (401, 403) or (status < 400 and not kinds.isdisjoint(_AUTH_TYPES)):
        cls = AuthenticationError
        hint = "check the API key (environment variable or config file) and its permissions"
    elif status == 429 or (status < 400 and not kinds.isdisjoint(_RATE_LIMIT_TYPES)):
        cls = RateLimitError
        hint = (
            f"rate limited; retry after {retry_after:g} s"
            if retry_after is not None
            else "rate limited; wait and retry"
        )
    elif _is_context_error(status, details):
        cls = ContextLengthExceededError
        hint = (
            "the prompt does not fit the model's context window; shorten the conversation "
            "or use a model (or server setting) with a longer context"
        )
    else:
        cls = LLMAPIError
        if status == 404:
            hint = "check the model name (is it installed/pulled?) and the URL"
        elif status in (503, 529) or details.error_type == "overloaded_error":
            hint = "the server is busy, overloaded or still loading the model; retry later"
        elif status >= 500:
            hint = "the server failed; retry, or look at the server's log"
        elif status < 300:
            hint = "the server gave up on this response; retry, or look at the server's log"
        else:
            hint = "check the request parameters"
    if mid_stream is None:
        mid_stream = status < 300
    if mid_stream:
        head = f"{who}{where} reported an error mid-stream"
    else:
        head = f"{who}{where} answered HTTP {status}"
    return cls(
        f"{head}: {details.message} ({hint})",
        status=status,
        body=body[:BODY_EXCERPT_CHARS],
        provider=provider,
        retry_after=retry_after,
        error_type=details.error_type,
        code=details.code,
        url=url,
    )


def _stream_error(obj: Mapping[str, Any], raw: str, provider: str | None) -> LLMAPIError:
    return build_api_error(200, parse_error_body(obj), body=raw, provider=provider)


def _malformed(
    what: str,
    line: bytes,
    provider: str | None,
    hint: str = "is this the right URL and protocol for this server?",
) -> MalformedResponseError:
    excerpt = line[:BODY_EXCERPT_CHARS].decode("utf-8", "replace")
    shown = excerpt if len(excerpt) <= 200 else excerpt[:199] + "…"
    return MalformedResponseError(
        f"{provider or 'the server'} sent {what}: {shown!r} ({hint})",
        body=excerpt,
        provider=provider,
    )


def _too_long(limit: int, provider: str | None) -> MalformedResponseError:
    return MalformedResponseError(
        f"{provider or 'the server'} sent a stream line or event longer than {limit} bytes; "
        "stopped reading (raise max_line_bytes if such long lines are expected)",
        provider=provider,
    )


# --------------------------------------------------------------------------- JSON

# The C scanner behind json.loads, called directly: it skips json.loads' argument
# handling and its two whitespace regex matches, about 40 % of the cost of a short
# line. Anything it does not accept whole goes through json.loads for the verdict.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

_BLANK: Any = object()


def _loads_slow(line: str, what: str, provider: str | None, *, truncated: bool = False) -> Any:
    """``json.loads`` with the error translated; returns ``_BLANK`` for a blank line."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as exc:
        if not line.strip():
            return _BLANK
        raw = line.encode("utf-8", "surrogatepass")
        if truncated:
            raise _malformed(
                what, raw, provider, "the connection was cut or the server stopped mid-line"
            ) from exc
        raise _malformed(what, raw, provider) from exc


def _check_object(obj: Any, line: str, provider: str | None) -> None:
    if type(obj) is not dict:
        raise _malformed("a line that is not a JSON object", line.encode(), provider)
    if obj.get("error") is not None:
        raise _stream_error(obj, line, provider)


def _longest_line_exceeds(data: bytes, limit: int) -> bool:
    return len(data) > limit and any(len(line) > limit for line in data.splitlines())


# --------------------------------------------------------------------------- readers
#
# The readers are small classes rather than async generators: a consumer that
# stops early (``break``, an exception, cancellation) leaves nothing behind that
# the event loop must finalise later (trio warns about abandoned async
# generators). Each chunk is parsed in one synchronous pass into a queue of
# items; an error found in a chunk is raised after the items before it.


class _Reader(Generic[_T]):
    """Pull chunks, parse each in one pass into ``_ready``, hand items out one by one."""

    __slots__ = ("_chunks", "_done", "_error", "_max", "_provider", "_ready")

    def __init__(
        self, chunks: AsyncIterable[bytes], max_line_bytes: int, provider: str | None
    ) -> None:
        self._chunks = chunks.__aiter__()
        self._ready: deque[_T] = deque()
        self._error: LLMAPIError | None = None
        self._done = False
        self._max = max_line_bytes
        self._provider = provider

    def __aiter__(self) -> _Reader[_T]:
        return self

    async def __anext__(self) -> _T:
        ready = self._ready
        while not ready:
            if self._error is not None:
                error, self._error = self._error, None
                self._done = True
                raise error
            if self._done:
                raise StopAsyncIteration
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True
                chunk = None
            try:
                if chunk is None:
                    self._parse_end()
                else:
                    self._parse(chunk)
            except LLMAPIError as exc:  # raised once the items before it are handed out
                self._error = exc
                self._done = True
        return ready.popleft()

    def _parse(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _parse_end(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop: drop what is buffered (the chunk source stays the caller's to close)."""
        self._ready.clear()
        self._error = None
        self._done = True


class _NDJSONReader(_Reader[dict[str, Any]]):
    __slots__ = ("_pending", "_pending_len")

    def __init__(
        self, chunks: AsyncIterable[bytes], max_line_bytes: int, provider: str | None
    ) -> None:
        super().__init__(chunks, max_line_bytes, provider)
        self._pending: list[bytes] = []
        self._pending_len = 0

    def _parse(self, chunk: bytes) -> None:
        limit = self._max
        nl = chunk.rfind(b"\n")
        if nl < 0:
            if chunk:
                self._pending.append(chunk)
                self._pending_len += len(chunk)
                if self._pending_len > limit:
                    raise _too_long(limit, self._provider)
            return
        if self._pending:
            nl += self._pending_len
            self._pending.append(chunk)
            data = b"".join(self._pending)
        else:
            data = chunk
        end = nl + 1
        if end == len(data):
            self._pending = []
            self._pending_len = 0
        else:
            tail = data[end:]
            self._pending = [tail]
            self._pending_len = len(tail)
            if len(tail) > limit:
                raise _too_long(limit, self._provider)
            data = data[:end]
        if len(data) > limit and _longest_line_exceeds(data, limit):
            raise _too_long(limit, self._provider)
        bad_utf8: MalformedResponseError | None = None
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            # Hand out the good lines before the bad one, then fail.
            cut = data.rfind(b"\n", 0, exc.start) + 1
            bad = data[cut : data.find(b"\n", exc.start)]
            bad_utf8 = _malformed("a line that is not valid UTF-8", bad, self._provider)
            text = data[:cut].decode()
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        lines.pop()  # what follows the last "\n": empty
        append = self._ready.append
        scan = _scan_once
        for line in lines:
            try:
                obj, stop = scan(line, 0)
                if stop != len(line):
                    obj = _loads_slow(line, "a line that is not JSON", self._provider)
            except (StopIteration, ValueError, RecursionError):
                obj = _loads_slow(line, "a line that is not JSON", self._provider)
            if type(obj) is not dict or "error" in obj:
                if obj is _BLANK:
                    continue
                _check_object(obj, line, self._provider)
            append(obj)
        if bad_utf8 is not None:
            raise bad_utf8

    def _parse_end(self) -> None:
        if not self._pending:
            return
        raw = b"".join(self._pending)
        self._pending = []
        if not raw.strip():
            return
        try:
            line = raw.decode()
        except UnicodeDecodeError as exc:
            raise _malformed("a line that is not valid UTF-8", raw, self._provider) from exc
        obj = _loads_slow(
            line,
            "a truncated last line (the stream ended mid-line)",
            self._provider,
            truncated=True,
        )
        _check_object(obj, line, self._provider)
        self._ready.append(obj)


def iter_ndjson(
    chunks: AsyncIterable[bytes],
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    provider: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Iterate over the JSON objects, one per line, of a newline-delimited JSON stream.

    Lines end with ``\\n`` or ``\\r\\n`` and may be split anywhere across
    chunks; blank lines are skipped; a last line without a line ending is
    yielded when it is complete JSON. The returned iterator also has an
    ``aclose()``, so ``contextlib.aclosing`` works; stopping early is safe
    without it.

    Raises (while iterating):
        LLMAPIError: a line has a top-level non-null ``error`` key (an error
            reported mid-stream); ``status`` is 200.
        MalformedResponseError: a line is not a JSON object or not UTF-8, the
            stream ends inside a line, or a line exceeds ``max_line_bytes``.
    """
    return _NDJSONReader(chunks, max_line_bytes, provider)


# --------------------------------------------------------------------------- SSE


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One Server-Sent Event.

    ``event`` is the ``event:`` field (None when absent or empty, which the
    spec calls a ``message`` event; ``"error"`` for a non-standard ``error:``
    line); ``data`` is the ``data:`` lines joined with ``\\n``; ``id`` is the
    last event id seen on the stream so far (None if none, or reset by an
    empty ``id:``).
    """

    event: str | None
    data: str
    id: str | None


class _SSEReader(_Reader[Any]):
    """The WHATWG event-stream parser, fed bytes chunk by chunk.

    Yields :class:`SSEEvent` objects, or with ``json_mode`` ``(event name,
    JSON object)`` pairs (stopping at ``[DONE]``), converted as each event is
    dispatched.
    """

    __slots__ = (
        "_data",
        "_data_len",
        "_event",
        "_first",
        "_json_mode",
        "_last_id",
        "_pending",
        "_pending_len",
        "_skip_lf",
    )

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        max_line_bytes: int,
        provider: str | None,
        json_mode: bool,
    ) -> None:
        super().__init__(chunks, max_line_bytes, provider)
        self._json_mode = json_mode
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._skip_lf = False
        self._first = True
        self._data: list[str] = []
        self._data_len = 0
        self._event: str | None = None
        self._last_id: str | None = None

    def _parse(self, chunk: bytes) -> None:
        if not chunk:
            return
        limit = self._max
        if self._skip_lf:
            # The previous chunk ended with "\r": a "\n" here completes that "\r\n".
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return
        if (
            not self._pending
            and not self._data
            and chunk[-2:] == b"\n\n"
            and chunk.startswith(b"data: ")
            and chunk.find(b"\n") == len(chunk) - 2
            and b"\r" not in chunk
            and len(chunk) <= limit
        ):
            # The common case of OpenAI-compatible servers: one "data: …" event per chunk.
            self._first = False
            event, self._event = self._event, None
            value = chunk[6:-2].decode("utf-8", "replace")
            if not self._json_mode:
                self._ready.append(SSEEvent(event, value, self._last_id))
            elif self._add_json(event, value):
                self._done = True
            return
        last = chunk.rfind(b"\n")
        cr = chunk.rfind(b"\r", last + 1)
        if cr > last:
            last = cr
        if last < 0:
            self._pending.append(chunk)
            self._pending_len += len(chunk)
            if self._pending_len > limit:
                raise _too_long(limit, self._provider)
            return
        end = last + 1
        if self._pending:
            end += self._pending_len
            self._pending.append(chunk)
            data = b"".join(self._pending)
        else:
            data = chunk
        if end == len(data):
            if self._pending_len:
                self._pending = []
                self._pending_len = 0
            self._skip_lf = data[-1] == 0x0D
        else:
            tail = data[end:]
            self._pending = [tail]
            self._pending_len = len(tail)
            if len(tail) > limit:
                raise _too_long(limit, self._provider)
            data = data[:end]
        if len(data) > limit and _longest_line_exceeds(data, limit):
            raise _too_long(limit, self._provider)
        # Only whole lines are decoded, so no character is cut in two.
        text = data.decode("utf-8", "replace")
        if self._first:
            self._first = False
            if text[0] == "\ufeff":
                text = text[1:]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines.pop()  # what follows the last line ending: empty
        parts = self._data
        size = self._data_len
        event = self._event
        append = self._ready.append
        json_mode = self._json_mode
        try:
            for line in lines:
                if not line:  # a blank line dispatches the event
                    if parts:
                        value = parts[0] if len(parts) == 1 else "\n".join(parts)
                        parts.clear()
                        size = 0
                        if not json_mode:
                            append(SSEEvent(event, value, self._last_id))
                        elif self._add_json(event, value):
                            self._done = True
                            return
                    event = None
                    continue
                if line.startswith("data: "):
                    value = line[6:]
                elif line[0] == ":":  # a comment, e.g. a keep-alive ping
                    continue
                else:
                    field, colon, value = line.partition(":")
                    if colon and value[:1] == " ":
                        value = value[1:]
                    if field == "event":
                        event = value or None
                        continue
                    if field == "id":
                        if "\0" not in value:
                            self._last_id = value or None
                        continue
                    if field == "error":
                        # Old llama.cpp builds send "error: {...}" instead of an error event.
                        event = "error"
                    elif field != "data":
                        continue  # "retry" and unknown fields are ignored
                parts.append(value)
                size += len(value) + 1
                if size > limit:
                    raise _too_long(limit, self._provider)
        finally:
            self._event = event
            self._data_len = size

    def _add_json(self, name: str | None, data: str) -> bool:
        """Queue one event's JSON; True at ``[DONE]``."""
        try:
            obj, stop = _scan_once(data, 0)
            if stop != len(data):
                raise ValueError
        except (StopIteration, ValueError, RecursionError):
            if name == "error":
                raise _stream_error_event(data, self._provider) from None
            if data == "[DONE]":
                return True
            obj = _loads_slow(data, "an event whose data is not JSON", self._provider)
            if obj is _BLANK:
                return False
        if name == "error":
            raise _stream_error_event(data, self._provider)
        if type(obj) is not dict or "error" in obj:
            _check_object(obj, data, self._provider)
        self._ready.append((name, obj))
        return False

    def _parse_end(self) -> None:
        pass  # an incomplete last event is discarded, as the spec says


def iter_sse(
    chunks: AsyncIterable[bytes],
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    provider: str | None = None,
) -> AsyncIterator[SSEEvent]:
    """Iterate over the Server-Sent Events of a ``text/event-stream`` body.

    Follows the WHATWG parsing rules: UTF-8 decoding with replacement;
    ``\\r\\n``, ``\\n`` and ``\\r`` line endings; a leading BOM is dropped;
    ``:`` comment lines (keep-alive pings) and the ``retry`` field are
    ignored; ``data`` lines are joined with ``\\n``; an event is dispatched at
    a blank line, and only if it has data; an incomplete event at the end of
    the stream is discarded. A non-standard ``error:`` line (old llama.cpp)
    makes the event an ``"error"`` event. Stopping early is safe; the
    iterator also has an ``aclose()``.

    Raises (while iterating):
        MalformedResponseError: a line or an event's data exceeds
            ``max_line_bytes`` (data is counted in characters).
    """
    return _SSEReader(chunks, max_line_bytes, provider, json_mode=False)


def iter_sse_json(
    chunks: AsyncIterable[bytes],
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    provider: str | None = None,
) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """Iterate over ``(event name, JSON object)`` per SSE event, stopping at ``data: [DONE]``.

    Events with empty data are skipped. The event name is None for unnamed
    events (OpenAI-compatible servers) and e.g. ``"content_block_delta"`` for
    Anthropic. Stopping early is safe; the iterator also has an ``aclose()``.

    Raises (while iterating):
        LLMAPIError: an ``error`` event (Anthropic's ``event: error``, old
            llama.cpp's ``error:`` line), or data whose JSON object has a
            top-level non-null ``error`` key; ``status`` is 200 and
            ``error_type``/``code`` carry what the server called the error
            (e.g. ``overloaded_error``).
        MalformedResponseError: data that is not a JSON object, or a line or
            event longer than ``max_line_bytes``.
    """
    return _SSEReader(chunks, max_line_bytes, provider, json_mode=True)


def _stream_error_event(data: str, provider: str | None) -> LLMAPIError:
    details = parse_error_body(data) if data.strip() else ErrorDetails(message="(no details)")
    return build_api_error(200, details, body=data, provider=provider)
