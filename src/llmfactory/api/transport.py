"""Pooled HTTP to LLM servers: one client per host and event loop, retries, error mapping.

* :func:`get_client` returns the one :class:`httpx.AsyncClient` shared by every
  caller talking to a host (scheme, host and port) from the running event loop
  (asyncio or trio). Clients are created on first use, never at import;
  :func:`close_clients` closes the running loop's clients and must be awaited
  before that loop ends (the factory's session reset does it).
* :func:`request_json` makes a unary call and returns the parsed JSON body.
* :func:`open_stream` opens a streaming call and yields a :class:`StreamResponse`
  whose body is read chunk by chunk (feed it to
  :func:`~llmfactory.api.streaming.iter_ndjson` or
  :func:`~llmfactory.api.streaming.iter_sse_json`); leaving the block always
  releases the connection, also on ``break``, errors and cancellation.

Retries (:class:`RetryPolicy`) happen only before any of a response body has
been handed to the caller: on connection failures before a response, and on
retryable statuses (408, 409, 429, 500, 502, 503, 504, 529), waiting for
``retry-after-ms``/``Retry-After`` when the server says (:func:`parse_retry_after`)
and with jittered exponential backoff otherwise. A started stream is never
replayed.

Every httpx exception is translated in one place (``_transport_error``) into
:class:`~llmfactory.errors.LLMConnectionError` / ``LLMTimeoutError``, and every
error status, via :func:`~llmfactory.api.streaming.build_api_error`, into an
:class:`~llmfactory.errors.LLMAPIError` subclass; the httpx exception is kept as
``__cause__``. Messages name the URL (without query string or credentials) and
never contain request headers.
"""

from __future__ import annotations

import email.utils
import json as _json
import logging
import math
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timezone
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import anyio
import httpx
from anyio.lowlevel import RunVar

from llmfactory.api.streaming import BODY_EXCERPT_CHARS, build_api_error, parse_error_body
from llmfactory.errors import (
    LLMAPIError,
    LLMConnectionError,
    LLMFactoryError,
    LLMTimeoutError,
    MalformedResponseError,
    redact_secrets,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUTS",
    "MAX_CONNECTIONS_PER_HOST",
    "NO_RETRY",
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "StreamResponse",
    "Timeouts",
    "close_client",
    "close_clients",
    "get_client",
    "open_stream",
    "parse_retry_after",
    "request_json",
]

logger = logging.getLogger("llmfactory.transport")

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
"""The largest unary response body :func:`request_json` reads by default: 32 MiB."""

RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
"""Statuses worth retrying: timeouts, conflicts, rate limits, server errors, Anthropic's 529."""

_ERROR_BODY_BYTES = 64 * 1024
_UNWIND_SECONDS = 1.0
_UNWIND_MAX_CHUNKS = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds to wait for each phase of a request; None waits forever.

    ``read`` is the longest silence between two reads of the response: a model
    may think for minutes before its first token, hence 300 s by default.
    """

    connect: float | None = 5.0
    read: float | None = 300.0
    write: float | None = 30.0
    pool: float | None = 30.0

    def to_httpx(self) -> httpx.Timeout:
        """The equivalent :class:`httpx.Timeout`."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    A request is tried at most ``1 + max_retries`` times. Without a
    ``Retry-After`` from the server, attempt *n* (from 0) waits
    ``min(backoff_max, backoff_base * 2**n)`` seconds, reduced by up to the
    fraction ``jitter`` at random. A server asking to wait longer than
    ``max_retry_after`` seconds is not retried: its error (e.g.
    :class:`~llmfactory.errors.RateLimitError` with ``retry_after``) is raised.
    """

    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    retry_statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {self.max_retries}")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            raise ValueError("backoff_base, backoff_max and max_retry_after must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter}")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 for the first)."""
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** min(attempt, 62))
        return delay * (1.0 - self.jitter * random.random())


DEFAULT_TIMEOUTS = Timeouts()
"""The timeouts used when a call passes none."""

DEFAULT_RETRY = RetryPolicy()
"""The retry policy used when a call passes none: up to 2 retries."""

NO_RETRY = RetryPolicy(max_retries=0)
"""Try once; for probes that must answer fast or not at all."""


# --------------------------------------------------------------------------- Retry-After


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``retry-after-ms`` (non-standard, milliseconds) wins over ``Retry-After``,
    which may be seconds (a float is accepted) or an HTTP date (a date in the
    past gives 0). Header names are matched case-insensitively. ``now`` (Unix
    time) defaults to the current time. Returns None when neither header is
    present or parseable; never a negative, infinite or NaN value.
    """
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        value = _non_negative(ms)
        if value is not None:
            return value / 1000.0
    text = _header(headers, "retry-after")
    if text is None:
        return None
    value = _non_negative(text)
    if value is not None:
        return value
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by another name
        when = when.replace(tzinfo=timezone.utc)
    try:
        target = when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
    return max(0.0, target - (time.time() if now is None else now))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and not isinstance(headers, httpx.Headers):
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def _non_negative(text: str) -> float | None:
    text = text.strip()
    if not text or not (text[0].isdigit() or text[0] == "."):
        return None
    if not all(c.isdigit() or c == "." for c in text):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- clients

_clients: RunVar[dict[str, httpx.AsyncClient]] = RunVar("llmfactory_http_clients")


def _origin(url: httpx.URL) -> str:
    scheme = url.scheme
    port = url.port or (443 if scheme == "https" else 80)
    host = url.host
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _safe_url(url: httpx.URL) -> str:
    """The URL without credentials, query string or fragment, for messages and logs."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


def _parse_url(url: str | httpx.URL) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise LLMConnectionError(
            f"cannot connect to {str(url)[:200]!r}: not a valid URL ({exc})", url=str(url)[:200]
        ) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise LLMConnectionError(
            f"cannot connect to {_safe_url(parsed)!r}: only absolute http:// and https:// "
            "URLs are supported",
            url=_safe_url(parsed),
        )
    return parsed


_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def _tls_context() -> ssl.SSLContext:
    # Building the verifying context loads the CA bundle (tens of milliseconds); every
    # client of the process shares one (SSLContext is safe to share between threads).
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = httpx.create_ssl_context()
        return _tls


MAX_CONNECTIONS_PER_HOST = 1000
"""The most connections the pool opens to one host at once (the OpenAI SDK's limit).

Each streaming call holds a connection until its stream ends, and LLM servers
queue requests themselves, so the pool should not be what makes the 101st
concurrent conversation wait (httpx's default is 100; a caller kept waiting for
a connection fails after ``Timeouts.pool``). The limit is lowered to half the
process's open-file limit when that is smaller, so that a burst of
conversations waits for a connection instead of failing with "too many open
files". Idle connections kept for reuse are few (16): httpcore's pool does
work proportional to idle × all connections whenever a request starts or ends.
"""

_IDLE_CONNECTIONS_PER_HOST = 16


def _max_connections() -> int:
    try:
        import resource
    except ImportError:  # Windows: no such per-process limit on sockets
        return MAX_CONNECTIONS_PER_HOST
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_PER_HOST
    return max(_IDLE_CONNECTIONS_PER_HOST, min(MAX_CONNECTIONS_PER_HOST, soft // 2))


def _new_client() -> httpx.AsyncClient:
    # Cookies are refused: the client is shared by every caller talking to a host.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        verify=_tls_context(),
        timeout=DEFAULT_TIMEOUTS.to_httpx(),
        limits=httpx.Limits(
            max_connections=_max_connections(),
            max_keepalive_connections=_IDLE_CONNECTIONS_PER_HOST,
            keepalive_expiry=30.0,
        ),
        follow_redirects=False,
        cookies=no_cookies,
    )


def get_client(url: str | httpx.URL) -> httpx.AsyncClient:
    """The pooled client for the host of ``url`` in the running event loop.

    One client per scheme, host and port and per event loop (asyncio or trio),
    created on first use and shared by every caller. Must be called from a
    task of that loop. Pass full URLs to the client; it has no base URL.

    Raises:
        LLMConnectionError: ``url`` is not an absolute http(s) URL.
    """
    parsed = _parse_url(url)
    key = _origin(parsed)
    clients = _clients.get(None)
    if clients is None:
        clients = {}
        _clients.set(clients)
    client = clients.get(key)
    if client is None or client.is_closed:
        client = clients[key] = _new_client()
        logger.debug("created HTTP client for %s", key)
    return client


async def close_clients() -> None:
    """Close every pooled client of the running event loop and forget them.

    Clients bound to other event loops are not touched (they can only be
    closed from their own loop). Safe to call when there are none, and
    completes even inside a cancelled scope.
    """
    clients = _clients.get(None)
    if not clients:
        return
    pending = list(clients.items())
    clients.clear()
    with anyio.CancelScope(shield=True):
        for key, client in pending:
            await client.aclose()
            logger.debug("closed HTTP client for %s", key)


async def close_client(url: str | httpx.URL) -> bool:
    """Close the running event loop's pooled client for the host of ``url``; True when
    there was one.

    Its connections are dropped; the next request to that host opens new ones.
    Other hosts' clients, and other event loops', are not touched. Completes
    even inside a cancelled scope.

    Raises:
        LLMConnectionError: ``url`` is not an absolute http(s) URL.
    """
    key = _origin(_parse_url(url))
    clients = _clients.get(None)
    client = clients.pop(key, None) if clients else None
    if client is None:
        return False
    with anyio.CancelScope(shield=True):
        await client.aclose()
    logger.debug("closed HTTP client for %s", key)
    return True


# --------------------------------------------------------------------------- error mapping


def _transport_error(
    exc: httpx.HTTPError,
    url: str,
    origin: str,
    *,
    provider: str | None,
    timeouts: Timeouts,
    started: bool,
) -> LLMConnectionError | LLMAPIError:
    """Translate an httpx exception; ``started`` says whether the response body had begun."""
    who = provider or "the server"
    detail = str(exc) or type(exc).__name__
    error: LLMConnectionError | LLMAPIError
    if isinstance(exc, httpx.ConnectTimeout):
        error = LLMTimeoutError(
            f"connecting to {url} timed out after {timeouts.connect} s: is {who} running and "
            f"reachable at {origin}? (raise Timeouts.connect for a slow network)",
            url=url,
            provider=provider,
        )
    elif isinstance(exc, httpx.ConnectError):
        error = LLMConnectionError(
            f"cannot connect to {url} ({detail}): is {who} running at {origin}? Start it, "
            "or configure the right host and port",
            url=url,
            provider=provider,
        )
    elif isinstance(exc, httpx.ReadTimeout):
        if started:
            message = (
                f"{who} at {url} sent nothing for {timeouts.read} s in the middle of the "
                "response; it may be stuck or overloaded (raise Timeouts.read if it is "
                "just slow)"
            )
        else:
            message = (
                f"{who} at {url} did not answer within {timeouts.read} s; it may be loading "
                "the model or overloaded (raise Timeouts.read if it is just slow)"
            )
        error = LLMTimeoutError(message, url=url, provider=provider)
    elif isinstance(exc, httpx.WriteTimeout):
        error = LLMTimeoutError(
            f"sending the request to {url} timed out after {timeouts.write} s; "
            "the server is not reading it",
            url=url,
            provider=provider,
        )
    elif isinstance(exc, httpx.PoolTimeout):
        error = LLMTimeoutError(
            f"no free connection to {origin} within {timeouts.pool} s: too many requests "
            "at once; limit the concurrency or raise Timeouts.pool",
            url=url,
            provider=provider,
        )
    elif isinstance(exc, httpx.DecodingError):
        error = MalformedResponseError(
            f"{who} at {url} sent a body that cannot be decoded ({detail})",
            provider=provider,
            url=url,
        )
    elif isinstance(exc, httpx.ProxyError):
        error = LLMConnectionError(
            f"the proxy refused the request to {url} ({detail}); check HTTP_PROXY, "
            "HTTPS_PROXY and NO_PROXY",
            url=url,
            provider=provider,
        )
    elif started:
        error = LLMConnectionError(
            f"connection lost mid-response from {url} ({detail}); {who} may have crashed "
            "or dropped the connection; the stream was not retried",
            url=url,
            provider=provider,
        )
    elif isinstance(exc, httpx.TransportError):
        error = LLMConnectionError(
            f"the connection to {url} failed before a response arrived ({detail}); "
            f"{who} may have crashed or closed the connection",
            url=url,
            provider=provider,
        )
    else:
        error = LLMConnectionError(
            f"the request to {url} failed ({detail})", url=url, provider=provider
        )
    return error


# Failures that happen before any response: safe to try again.
_RETRYABLE_EXCEPTIONS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


async def _status_error(
    response: StreamResponse, provider: str | None, retry_after: float | None
) -> LLMAPIError:
    status = response.status_code
    url = response.url
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        return LLMAPIError(
            f"{url} redirected (HTTP {status}) to {location}; llmfactory does not follow "
            "redirects: configure that URL instead",
            status=status,
            provider=provider,
            url=url,
        )
    try:
        raw = await response.read_upto(_ERROR_BODY_BYTES)
    except (LLMConnectionError, LLMAPIError):
        raw = b""  # the status says enough; do not hide it behind a read failure
    text = raw.decode("utf-8", "replace")
    return build_api_error(
        status,
        parse_error_body(text),
        body=text[:BODY_EXCERPT_CHARS],
        provider=provider,
        url=url,
        retry_after=retry_after,
    )


async def _html_error(response: StreamResponse, provider: str | None) -> MalformedResponseError:
    """A 2xx HTML page where the API's answer belongs: a captive portal, a proxy's sign-in page.

    Reported as such (an SSE reader would skip its lines and report a stream cut
    short, inviting a useless retry); never retried.
    """
    try:
        raw = await response.read_upto(_ERROR_BODY_BYTES)
    except (LLMConnectionError, LLMAPIError):
        raw = b""
    text = raw.decode("utf-8", "replace")
    return MalformedResponseError(
        f"{provider or 'the server'} at {response.url} answered HTTP {response.status_code} "
        f"with an HTML page ({parse_error_body(text).message}) instead of the API's answer; "
        "is this the right URL, or is a proxy or captive portal in the way?",
        status=response.status_code,
        body=text[:BODY_EXCERPT_CHARS],
        provider=provider,
        url=response.url,
    )


class _PlainBody(httpx.AsyncByteStream):
    """A request body handed to httpcore in one piece, without an async generator.

    httpx's own ``ByteStream`` yields the body from an async generator, and
    httpcore abandons that generator suspended whenever writing the body
    fails: it swallows a ``WriteError`` to read the answer a server may have
    sent before closing the connection (a reused keep-alive connection the
    server had just closed, an early 413), and a write timeout or a
    cancellation unwinds it. When the garbage collector finalises it, trio
    warns ("Async generator 'httpx._content.ByteStream.__aiter__' was garbage
    collected…"; httpx issues #3597 and #3686). A plain iterator leaves
    nothing to finalise.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _OneChunk(self._body)


class _OneChunk:
    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body or None

    def __aiter__(self) -> _OneChunk:
        return self

    async def __anext__(self) -> bytes:
        body, self._body = self._body, None
        if body is None:
            raise StopAsyncIteration
        return body


def with_plain_body(request: httpx.Request) -> httpx.Request:
    """``request``, its in-memory body (JSON, bytes, or none) sent by a :class:`_PlainBody`.

    A streamed body (an iterator the caller gave) is left as it is.
    """
    if isinstance(request.stream, httpx.ByteStream):
        request.stream = _PlainBody(request.content)
    return request


async def _send(
    method: str,
    url: str | httpx.URL,
    *,
    json: Any,
    headers: Mapping[str, str] | None,
    timeouts: Timeouts,
    retry: RetryPolicy,
    provider: str | None,
) -> StreamResponse:
    parsed = _parse_url(url)
    safe = _safe_url(parsed)
    origin = _origin(parsed)
    client = get_client(parsed)
    timeout = timeouts.to_httpx()
    attempt = 0
    while True:
        request = with_plain_body(
            client.build_request(method, parsed, json=json, headers=headers, timeout=timeout)
        )
        logger.debug("%s %s (attempt %d of %d)", method, safe, attempt + 1, retry.max_retries + 1)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = _transport_error(
                exc, safe, origin, provider=provider, timeouts=timeouts, started=False
            )
            if attempt < retry.max_retries and isinstance(exc, _RETRYABLE_EXCEPTIONS):
                delay = retry.backoff(attempt)
                logger.debug("retrying %s %s in %.3f s after %r", method, safe, delay, exc)
                attempt += 1
                await anyio.sleep(delay)
                continue
            raise error from exc
        status = response.status_code
        logger.debug("%s %s -> HTTP %d", method, safe, status)
        stream = StreamResponse(response, url=safe, provider=provider, timeouts=timeouts)
        if status < 300:
            if "html" in response.headers.get("content-type", "").lower():
                try:
                    raise await _html_error(stream, provider)
                finally:
                    await stream.aclose()
            return stream
        retry_after = parse_retry_after(response.headers)
        try:
            error = await _status_error(stream, provider, retry_after)
        finally:
            await stream.aclose()
        if (
            status in retry.retry_statuses
            and attempt < retry.max_retries
            and (retry_after is None or retry_after <= retry.max_retry_after)
        ):
            delay = retry.backoff(attempt) if retry_after is None else retry_after
            logger.debug("retrying %s %s in %.3f s after HTTP %d", method, safe, delay, status)
            attempt += 1
            await anyio.sleep(delay)
            continue
        raise error


# --------------------------------------------------------------------------- secrets

# Headers that carry credentials: their values never appear in an error, even when a
# server (or a proxy) quotes what it was sent.
_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key"}
)


def _secrets_in(headers: Mapping[str, str] | None) -> list[str]:
    """The credentials in request headers: each value, and its token after a scheme."""
    found: list[str] = []
    for name, value in (headers or {}).items():
        if name.lower() in _CREDENTIAL_HEADERS and value:
            found.append(value)
            scheme, _, token = value.partition(" ")
            if token.strip() and scheme.isalpha():
                found.append(token.strip())
    return found


@contextmanager
def _redacting(secrets: list[str]) -> Iterator[None]:
    """Take ``secrets`` out of any llmfactory error raised in the block."""
    try:
        yield
    except LLMFactoryError as exc:
        if secrets:
            redact_secrets(exc, secrets)
        raise


# --------------------------------------------------------------------------- public calls


class StreamResponse:
    """An HTTP response whose body has not been read yet.

    Iterate over it (``async for chunk in response``) for the body as byte
    chunks, as they arrive, or :meth:`read` it whole. Reading errors are
    translated: a read timeout raises
    :class:`~llmfactory.errors.LLMTimeoutError`, a broken connection
    :class:`~llmfactory.errors.LLMConnectionError` ("connection lost
    mid-response"). Obtained from :func:`open_stream`, which closes it.
    """

    __slots__ = ("_chunks", "_finished", "_response", "_timeouts", "provider", "url")

    def __init__(
        self,
        response: httpx.Response,
        *,
        url: str,
        provider: str | None,
        timeouts: Timeouts,
    ) -> None:
        self._response = response
        self._chunks: AsyncIterator[bytes] | None = None
        self._finished = False
        self._timeouts = timeouts
        self.url = url
        """The request URL, without query string or credentials."""
        self.provider = provider
        """The provider or runtime name given by the caller, for messages."""

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        return self._response.status_code

    @property
    def headers(self) -> httpx.Headers:
        """The response headers."""
        return self._response.headers

    def __aiter__(self) -> StreamResponse:
        return self

    async def __anext__(self) -> bytes:
        """The next chunk of the body; raises StopAsyncIteration at its end."""
        chunks = self._chunks
        if chunks is None:
            if self._finished:
                raise StopAsyncIteration
            chunks = self._chunks = _body_chunks(self._response)
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            self._finished = True
            raise
        except httpx.HTTPError as exc:
            self._finished = True
            raise _transport_error(
                exc,
                self.url,
                _origin(self._response.request.url),
                provider=self.provider,
                timeouts=self._timeouts,
                started=True,
            ) from exc
        except BaseException:
            self._finished = True  # e.g. cancellation: it unwound httpx's generators
            raise

    async def read(self, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
        """Read the rest of the body, at most ``max_bytes`` of it.

        Raises:
            MalformedResponseError: the body is larger than ``max_bytes``
                (detected from ``Content-Length`` when given, else after
                reading just past the cap).
        """
        length = self.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > max_bytes:
            raise self._too_large(max_bytes)
        parts: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > max_bytes:
                raise self._too_large(max_bytes)
            parts.append(chunk)
        return b"".join(parts)

    async def read_upto(self, max_bytes: int) -> bytes:
        """Read at most ``max_bytes`` of the body and drop the rest."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self:
            parts.append(chunk)
            size += len(chunk)
            if size >= max_bytes:
                break
        return b"".join(parts)[:max_bytes]

    def _too_large(self, max_bytes: int) -> MalformedResponseError:
        return MalformedResponseError(
            f"{self.provider or 'the server'} at {self.url} sent a body larger than "
            f"{max_bytes} bytes; not reading it (is this the right URL?)",
            status=self.status_code,
            provider=self.provider,
            url=self.url,
        )

    async def aclose(self) -> None:
        """Release the connection; with the body unfinished, httpx closes it instead of reusing it.

        Completes even in a cancelled scope.
        """
        with anyio.CancelScope(shield=True):
            await self._response.aclose()
            chunks, self._chunks = self._chunks, None
            if chunks is not None and not self._finished:
                self._finished = True
                await _unwind(chunks)


def _body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive.

    A body without a ``Content-Encoding`` (what LLM servers stream) is read
    straight from the response's byte stream: ``aiter_bytes`` would pass every
    chunk through two more generators, an identity decoder and a chunker, a
    tenth of the client's time per token on a fast stream. httpx's error
    mapping sits below, in the transport, so errors are the same either way.
    """
    encoding = response.headers.get("content-encoding")
    stream = response.stream
    if (encoding is None or encoding.strip().lower() == "identity") and isinstance(
        stream, httpx.AsyncByteStream
    ):
        if response.is_stream_consumed or response.is_closed:
            return response.aiter_raw()  # raises httpx's own StreamConsumed / StreamClosed
        response.is_stream_consumed = True
        return stream.__aiter__()
    return response.aiter_bytes()


async def _unwind(chunks: AsyncIterator[bytes]) -> None:
    """Finish httpx's body iterator after its response was closed mid-body.

    httpx and httpcore read a body through about six nested async generators;
    closing the outermost one leaves the inner ones suspended, and when the
    garbage collector finalises them trio warns (a ResourceWarning per
    generator). Reading on from the closed response makes the innermost read
    fail at once (after at most what was already buffered), and that error
    unwinds and finishes every layer.
    """
    with anyio.move_on_after(_UNWIND_SECONDS):
        for _ in range(_UNWIND_MAX_CHUNKS):
            try:
                await chunks.__anext__()
            except Exception:
                return
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


@asynccontextmanager
async def open_stream(
    method: str,
    url: str | httpx.URL,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeouts: Timeouts | None = None,
    retry: RetryPolicy | None = None,
    provider: str | None = None,
) -> AsyncIterator[StreamResponse]:
    """Send a request and yield its response once a 2xx status has arrived.

    Retries per ``retry`` until then; an error status raises the mapped
    :class:`~llmfactory.errors.LLMAPIError` with a bounded excerpt of the body.
    Once yielded, nothing is retried. Leaving the block always releases the
    connection (on completion, ``break``, errors and cancellation); an
    unfinished body closes the connection, which also tells the server to stop
    generating.

    Raises:
        LLMConnectionError: the server could not be reached, or the connection
            broke (``LLMTimeoutError`` for timeouts).
        LLMAPIError: the server answered with an error or a redirect.
        MalformedResponseError: the server answered 2xx with an HTML page (a
            captive portal or a proxy's page) instead of the API's answer.
    """
    secrets = _secrets_in(headers)
    with _redacting(secrets):
        stream = await _send(
            method,
            url,
            json=json,
            headers=headers,
            timeouts=timeouts or DEFAULT_TIMEOUTS,
            retry=retry or DEFAULT_RETRY,
            provider=provider,
        )
    try:
        with _redacting(secrets):
            yield stream
    finally:
        await stream.aclose()


async def request_json(
    method: str,
    url: str | httpx.URL,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeouts: Timeouts | None = None,
    retry: RetryPolicy | None = None,
    provider: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Any:
    """Send a request and return its parsed JSON body (None for an empty body).

    ``json`` is sent as the JSON request body when not None. Retries and error
    mapping as for :func:`open_stream`. A 2xx body that is a JSON object with
    a non-null top-level ``error`` key (LM Studio answers unknown routes so)
    raises :class:`~llmfactory.errors.LLMAPIError` with that status.

    Raises:
        LLMConnectionError: the server could not be reached or the connection broke.
        LLMAPIError: the server answered with an error.
        MalformedResponseError: the body is not JSON or is larger than ``max_body_bytes``.
    """
    async with open_stream(
        method,
        url,
        json=json,
        headers=headers,
        timeouts=timeouts,
        retry=retry,
        provider=provider,
    ) as response:
        body = await response.read(max_body_bytes)
        status = response.status_code
        safe = response.url
    with _redacting(_secrets_in(headers)):
        return _parse_json_body(body, status, safe, provider)


def _parse_json_body(body: bytes, status: int, safe: str, provider: str | None) -> Any:
    if not body.strip():
        return None
    try:
        obj = _json.loads(body)
    except (ValueError, RecursionError) as exc:
        excerpt = body[:BODY_EXCERPT_CHARS].decode("utf-8", "replace")
        raise MalformedResponseError(
            f"{provider or 'the server'} at {safe} answered HTTP {status} with a body that "
            f"is not JSON: {excerpt[:200]!r} (is this the right URL for this server?)",
            status=status,
            body=excerpt,
            provider=provider,
            url=safe,
        ) from exc
    if isinstance(obj, dict) and obj.get("error") is not None:
        text = body[:BODY_EXCERPT_CHARS].decode("utf-8", "replace")
        raise build_api_error(
            status, parse_error_body(obj), body=text, provider=provider, url=safe, mid_stream=False
        )
    return obj
