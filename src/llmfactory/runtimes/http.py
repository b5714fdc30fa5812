"""The HTTP a probe needs: bounded JSON requests to one host, errors translated once.

:class:`ProbeClient` wraps the one :class:`httpx.AsyncClient` a discovery run
shares between hosts. Every request:

* goes to ``host.base_url + path``, never follows a redirect (a redirect is
  reported, not followed to another host);
* reads at most :data:`MAX_BODY_BYTES` of the body (streamed; a larger body is
  an error, and is not read to the end);
* translates every failure into an :class:`~llmfactory.errors.LLMFactoryError`
  keeping the cause: :class:`~llmfactory.errors.RuntimeUnavailableError` when
  the host cannot be reached or does not answer in time,
  :class:`~llmfactory.errors.AuthenticationError` for 401/403,
  :class:`~llmfactory.errors.LLMAPIError` for any other error status, and
  :class:`~llmfactory.errors.MalformedResponseError` for HTML, invalid JSON or
  a body that is too large.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from llmfactory.api.transport import with_plain_body
from llmfactory.errors import (
    AuthenticationError,
    LLMAPIError,
    LLMFactoryError,
    MalformedResponseError,
    RuntimeUnavailableError,
    redact_secrets,
)

if TYPE_CHECKING:
    from llmfactory.registry.models import LLMModel
    from llmfactory.runtimes.base import Host, ProbeResult

__all__ = ["MAX_BODY_BYTES", "HTTPClients", "ProbeClient", "new_http_client"]

MAX_BODY_BYTES = 8 * 1024 * 1024
"""The largest response body a probe reads: 8 MiB (a model listing is a few KiB)."""

_EXCERPT = 200
# The variable holding a runtime's bearer token, named when its server answers 401/403.
_CREDENTIAL_VARS = {
    "lmstudio": "LMSTUDIO_API_TOKEN",
    "openai_compatible": "OPENAI_COMPATIBLE_API_KEY",
}


def new_http_client(
    *,
    connect_timeout: float,
    deadline: float,
    verify: ssl.SSLContext | bool = True,
    max_connections: int = 8,
) -> httpx.AsyncClient:
    """A client for probing one host: short connect timeout, no redirects, no proxies.

    Proxy settings from the environment are ignored (``trust_env=False``): the
    hosts probed are on this machine or the LAN, where a proxy would be wrong.
    Pass a shared ``verify`` context when creating many clients: building the
    default one loads the CA bundle, which takes tens of milliseconds.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(deadline, connect=connect_timeout),
        follow_redirects=False,
        trust_env=False,
        verify=verify,
        limits=httpx.Limits(max_connections=max_connections,
                            max_keepalive_connections=max_connections),
        headers={"Accept": "application/json", "User-Agent": "llmfactory-discovery"},
    )


class HTTPClients:
    """The httpx clients of one discovery run: one per host, created on first use.

    One client per host keeps each connection pool small (httpcore's pool does
    work proportional to its connections on every request, so one pool for a
    hundred hosts is slow). The TLS context is shared: the verifying one is
    made only when an ``https`` host is probed. :meth:`aclose` closes them all.
    """

    def __init__(self, *, connect_timeout: float, deadline: float, max_connections: int = 8):
        self.connect_timeout = connect_timeout
        self.deadline = deadline
        self.max_connections = max_connections
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tls: ssl.SSLContext | None = None
        self._plain: ssl.SSLContext | None = None

    def _context(self, scheme: str) -> ssl.SSLContext:
        if scheme == "https":
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            return self._tls
        if self._plain is None:  # never used for TLS: http hosts are not redirected
            self._plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self._plain.check_hostname = False
            self._plain.verify_mode = ssl.CERT_NONE
        return self._plain

    def for_host(self, host: Host) -> httpx.AsyncClient:
        """The client for ``host`` (created on first use)."""
        client = self._clients.get(host.key)
        if client is None:
            client = new_http_client(
                connect_timeout=self.connect_timeout,
                deadline=self.deadline,
                verify=self._context(host.scheme),
                max_connections=self.max_connections,
            )
            self._clients[host.key] = client
        return client

    async def aclose(self) -> None:
        """Close every client (shielded from cancellation)."""
        clients, self._clients = list(self._clients.values()), {}
        with anyio.CancelScope(shield=True):
            for client in clients:
                await client.aclose()


def _excerpt(data: bytes) -> str:
    text = data[: _EXCERPT * 4].decode("utf-8", "replace").strip()
    text = " ".join(text.split())
    return text[:_EXCERPT] + ("…" if len(text) > _EXCERPT else "")


def _looks_absent(status: int, body: Any) -> bool:
    """True for the ways servers say "no such route" (404/405, LM Studio's 200 + error)."""
    if status in (404, 405):
        return True
    return (
        status == 200
        and isinstance(body, dict)
        and isinstance(body.get("error"), str)
        and set(body) <= {"error"}
    )


class _Limiters:
    """A per-host limiter, and the run's limiter shared by every host (if any)."""

    def __init__(
        self, own: anyio.CapacityLimiter, shared: anyio.CapacityLimiter | None
    ) -> None:
        self.own = own
        self.shared = shared

    async def __aenter__(self) -> None:
        await self.own.acquire()
        if self.shared is not None:
            try:
                await self.shared.acquire()
            except BaseException:
                self.own.release()
                raise

    async def __aexit__(self, *exc: object) -> None:
        if self.shared is not None:
            self.shared.release()
        self.own.release()


class ProbeClient:
    """JSON over HTTP to one host, for one discovery run.

    ``known_model(identifier)`` returns what the registry already holds for an
    identifier (the Ollama probe uses it as a describe cache keyed by digest);
    ``describe_limiter`` (``async with client.describe_limiter:``) bounds the
    concurrent per-model requests to this host, and to all hosts of the run;
    ``deadline`` is the :func:`anyio.current_time` by which the probe must end
    (a probe may stop optional work a little before it); ``env`` is the
    environment the run uses (for API tokens).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        host: Host,
        *,
        deadline: float,
        known_model: Callable[[str], LLMModel | None] | None = None,
        env: Mapping[str, str] | None = None,
        describe_concurrency: int = 4,
        max_body_bytes: int = MAX_BODY_BYTES,
        shared_limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.http = http
        self.host = host
        self.deadline = deadline
        self.env: Mapping[str, str] = env if env is not None else {}
        self.describe_limiter = _Limiters(
            anyio.CapacityLimiter(max(1, describe_concurrency)), shared_limiter
        )
        self.max_body_bytes = max_body_bytes
        self.provisional: ProbeResult | None = None
        self._known = known_model

    def offer(self, result: ProbeResult) -> None:
        """Leave a result to use if the deadline cuts the probe short.

        A probe that has listed the models but still has optional work to do
        (describing each) offers what it has; when the deadline passes before
        the probe returns, discovery records this result (with a warning)
        instead of calling the host unreachable.
        """
        self.provisional = result

    def known_model(self, identifier: str) -> LLMModel | None:
        """The registry's record for ``identifier`` (None when unknown)."""
        return self._known(identifier) if self._known is not None else None

    def time_left(self) -> float:
        """Seconds until :attr:`deadline`."""
        return self.deadline - anyio.current_time()

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this host."""
        return self.host.base_url + path

    def malformed(self, path: str, problem: str) -> MalformedResponseError:
        """The error a probe raises when a JSON answer does not have the expected shape."""
        return MalformedResponseError(
            f"{self.host.key} (GET/POST {self.url(path)}): {problem}; is this really a "
            f"{self.host.runtime} server?",
            provider=self.host.runtime,
            url=self.url(path),
        )

    async def get_json(self, path: str, *, headers: Mapping[str, str] | None = None) -> Any:
        """``GET path`` and return the JSON body; raise on any error status."""
        return (await self._request("GET", path, None, headers, absent_ok=False))[1]

    async def post_json(
        self, path: str, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> Any:
        """``POST path`` with a JSON body and return the JSON answer; raise on any error status."""
        return (await self._request("POST", path, body, headers, absent_ok=False))[1]

    async def get_optional_json(
        self, path: str, *, headers: Mapping[str, str] | None = None
    ) -> Any | None:
        """Like :meth:`get_json` but None when the route does not exist.

        "Does not exist" is 404 or 405, or a 200 whose body is only
        ``{"error": "…"}`` (LM Studio's answer to unknown routes).
        """
        status, body = await self._request("GET", path, None, headers, absent_ok=True)
        return None if _looks_absent(status, body) else body

    async def _request(
        self,
        method: str,
        path: str,
        body: Any,
        headers: Mapping[str, str] | None,
        *,
        absent_ok: bool,
    ) -> tuple[int, Any]:
        url = self.url(path)
        where = f"{self.host.key} ({method} {url})"
        try:
            # The body goes as a plain iterator, not httpx's async generator: one
            # left suspended by a failed write makes trio warn (see with_plain_body).
            request = with_plain_body(
                self.http.build_request(method, url, json=body, headers=dict(headers or {}))
            )
            async with aclosing(await self.http.send(request, stream=True)) as response:
                status = response.status_code
                if 300 <= status < 400:
                    location = response.headers.get("location", "?")
                    raise LLMAPIError(
                        f"{where} redirected to {location}; redirects are not followed "
                        "during discovery: add the host by its final URL",
                        status=status,
                        provider=self.host.runtime,
                        url=url,
                    )
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and (
                    int(declared) > self.max_body_bytes
                ):
                    raise self._too_large(where, status, url)
                data = bytearray()
                too_large = False
                # Stopping at the cap by cancelling (rather than leaving the loop)
                # ends httpx's chain of async generators from the inside, so none
                # is left suspended (trio warns about those).
                with anyio.CancelScope() as scope:
                    async for chunk in response.aiter_bytes():
                        if len(data) + len(chunk) > self.max_body_bytes:
                            too_large = True
                            scope.cancel()
                        else:
                            data += chunk
                if too_large:
                    raise self._too_large(where, status, url)
                content_type = response.headers.get("content-type", "")
        except httpx.TimeoutException as exc:
            raise RuntimeUnavailableError(
                f"{where}: no answer in time ({type(exc).__name__}); is the runtime "
                "running and reachable from here?",
                host=str(self.host.address),
                runtime=self.host.runtime,
            ) from exc
        except httpx.TransportError as exc:
            raise RuntimeUnavailableError(
                f"{where}: cannot connect ({exc or type(exc).__name__}); is the runtime "
                "running and reachable from here?",
                host=str(self.host.address),
                runtime=self.host.runtime,
            ) from exc
        try:
            return status, self._parse(where, url, status, bytes(data), content_type, absent_ok)
        except LLMFactoryError as exc:
            # A server quoting the token it was sent must not put it in a report or the
            # registry (host records keep the last error).
            redact_secrets(exc, _tokens(headers))
            raise

    def _too_large(self, where: str, status: int, url: str) -> MalformedResponseError:
        return MalformedResponseError(
            f"{where}: the body is larger than {self.max_body_bytes // (1024 * 1024)} MiB; "
            f"this does not look like a {self.host.runtime} server",
            status=status,
            provider=self.host.runtime,
            url=url,
        )

    def _parse(
        self,
        where: str,
        url: str,
        status: int,
        data: bytes,
        content_type: str,
        absent_ok: bool,
    ) -> Any:
        parsed: Any = None
        parse_error: Exception | None = None
        try:
            parsed = json.loads(data) if data.strip() else None
        except ValueError as exc:
            parse_error = exc
        if absent_ok and status in (404, 405):
            return parsed
        if status >= 400:
            message = _error_message(parsed) or _excerpt(data) or "(empty body)"
            cls = AuthenticationError if status in (401, 403) else LLMAPIError
            hint = ""
            if status in (401, 403):
                variable = _CREDENTIAL_VARS.get(self.host.runtime)
                hint = " (the server wants credentials" + (
                    f": set {variable})" if variable else ")"
                )
            raise cls(
                f"{where}: HTTP {status}: {message}{hint}",
                status=status,
                body=_excerpt(data),
                provider=self.host.runtime,
                url=url,
            )
        if parse_error is not None or parsed is None:
            kind = "HTML" if ("html" in content_type or data.lstrip()[:1] == b"<") else "not JSON"
            detail = "an empty body" if not data.strip() else f"{kind}: {_excerpt(data)!r}"
            raise MalformedResponseError(
                f"{where}: expected JSON, got {detail}; is something other than "
                f"{self.host.runtime} listening there?",
                status=status,
                body=_excerpt(data),
                provider=self.host.runtime,
                url=url,
            ) from parse_error
        return parsed


def _tokens(headers: Mapping[str, str] | None) -> list[str]:
    """The credentials sent in ``headers`` (a bearer token and the whole header value)."""
    found: list[str] = []
    for name, value in (headers or {}).items():
        if name.lower() in ("authorization", "x-api-key", "api-key") and value:
            found += [value, value.partition(" ")[2].strip()]
    return found


def _error_message(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(body.get("message"), str):
        return str(body["message"])
    if isinstance(body.get("detail"), str):
        return str(body["detail"])
    return None
