"""The fault corpus for calls: every fault × every wire protocol × unary and streamed.

Each case pushes one fault on the chat endpoint of a loopback server (or
points the conversation at a refused port or a host that never answers),
sends one message, and checks the promises of ``docs/reliability.md``:

* the call ends within the case's time bound, with the documented error type
  (or succeeds, for faults a client should shrug off);
* the history is exactly what it was before the call;
* no pooled connection is left in use, and at most one stays open;
* the server saw exactly the requests the retry rules allow;
* the conversation keeps going: once the fault is gone the next call succeeds.

Faults a call cannot meet (a mid-stream error object on a unary call) are not
generated. Timeouts are short (0.2 s) so that the corpus stays fast; the time
bounds are many times that, for slow CI machines.
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from llmfactory import (
    LLMAPIError,
    LLMConfig,
    LLMConnectionError,
    LLMFactory,
    LLMTimeoutError,
    RateLimitError,
)
from llmfactory.errors import MalformedResponseError
from tests.api.chat_support import clients  # noqa: F401  (a fixture)
from tests.faults.support import MODES, PROTOCOLS, Protocol, run_call, settle_pool
from tests.servers import Fault, LoopbackServer, blackhole_server, refused_port
from tests.servers.base import CannedResponse

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clients")]

FAST = 0.2  # the read timeout of the timeout cases, seconds
PATIENT = {"timeout": 10.0}  # for the calls around the faulty one
Expectation = tuple[type[Exception] | None, str]


@dataclass(frozen=True, kw_only=True)
class Ctx:
    """What a case's fault may depend on."""

    protocol: Protocol
    mode: str
    other: LoopbackServer | None  # a second server, on another port: a redirect's target


@dataclass(frozen=True, kw_only=True)
class Case:
    """One fault and what a call meeting it must do.

    ``expect`` is the error type (None: the call succeeds) and ``match`` a
    phrase of its message; ``per`` overrides both for a protocol, a mode, or
    ``"protocol/mode"``. ``requests`` is how many requests the server must see
    (None: not checked). ``target`` is ``server``, ``refused`` or ``blackhole``.
    ``check`` makes further assertions on the error.
    """

    name: str
    fault: Callable[[Ctx], Fault] | None = None
    target: str = "server"
    expect: type[Exception] | None = None
    match: str = ""
    per: Mapping[str, Expectation] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=lambda: {"retries": 0, "timeout": 5.0})
    requests: int | None = 1
    within: float = 3.0
    modes: tuple[str, ...] = MODES
    check: Callable[[Exception], None] | None = None
    needs_other: bool = False

    def expectation(self, protocol: str, mode: str) -> Expectation:
        for key in (f"{protocol}/{mode}", protocol, mode):
            if key in self.per:
                return self.per[key]
        return self.expect, self.match


def _status(status: int) -> Callable[[Exception], None]:
    def check(exc: Exception) -> None:
        assert isinstance(exc, LLMAPIError) and exc.status == status, exc

    return check


def _retry_after(low: float, high: float) -> Callable[[Exception], None]:
    def check(exc: Exception) -> None:
        assert isinstance(exc, RateLimitError) and exc.status == 429
        assert exc.retry_after is not None and low <= exc.retry_after <= high, exc.retry_after

    return check


def _not_a_timeout(exc: Exception) -> None:
    assert not isinstance(exc, LLMTimeoutError), exc


def _cut(ctx: Ctx, reset: bool) -> Fault:
    # A unary reply is one frame: cut it before its first byte; a stream after two frames.
    return Fault.cut_after(0 if ctx.mode == "unary" else 2, reset=reset)


def _truncated(ctx: Ctx) -> Fault:
    return Fault(response=CannedResponse(200, ctx.protocol.truncated,
                                         content_type=ctx.protocol.stream_type))


def _http_error(status: int, *, with_body: bool) -> Callable[[Ctx], Fault]:
    def fault(ctx: Ctx) -> Fault:
        return Fault.http_error(status) if with_body else Fault.http_error(status, None)

    return fault


def _redirect(ctx: Ctx) -> Fault:
    assert ctx.other is not None
    return Fault.http_error(307, None, headers={"Location": ctx.other.url + ctx.protocol.chat_path})


def _http_date(offset: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=offset)


_TIMEOUT = {"retries": 0, "timeout": FAST}
_STORM = {"retries": 2, "timeout": 5.0}

CASES: tuple[Case, ...] = (
    # -- no connection, or no answer ------------------------------------------------------
    Case(name="refused port", target="refused", expect=LLMConnectionError,
         match="cannot connect", requests=None, check=_not_a_timeout),
    Case(name="accepts and never answers", target="blackhole", expect=LLMTimeoutError,
         match="did not answer", config=_TIMEOUT, requests=None),
    Case(name="headers then silence", fault=lambda c: Fault.stall_after_headers(30),
         expect=LLMTimeoutError, match="sent nothing", config=_TIMEOUT),
    Case(name="one byte a second", fault=lambda c: Fault.drip_bytes(1.0, 1),
         expect=LLMTimeoutError, match=f"sent nothing for {FAST} s", config=_TIMEOUT),
    Case(name="reset before any response", fault=lambda c: Fault.disconnect_now(),
         expect=LLMConnectionError, match="before a response", check=_not_a_timeout),
    # -- the wrong answer ------------------------------------------------------------------
    Case(name="html instead of json", fault=lambda c: Fault.html(),
         expect=MalformedResponseError, match="with an HTML page (Gateway)"),
    Case(name="html error page 502", fault=lambda c: Fault.html(502),
         expect=LLMAPIError, match="Gateway", check=_status(502)),
    *(
        Case(name=f"http {status} {'with' if body else 'without'} body",
             fault=_http_error(status, with_body=body),
             expect=LLMAPIError, match=f"HTTP {status}", check=_status(status))
        for status in (500, 502, 503)
        for body in (True, False)
    ),
    Case(name="503 storm retried then raised",
         fault=lambda c: Fault.http_error(503, retry_after=0), expect=LLMAPIError,
         match="HTTP 503", config=_STORM, requests=3, check=_status(503)),
    Case(name="429 storm, retry-after in seconds",
         fault=lambda c: Fault.rate_limited(retry_after=0.05), expect=RateLimitError,
         match="retry after 0.05 s", config=_STORM, requests=3,
         check=_retry_after(0.05, 0.05)),
    Case(name="429 storm, retry-after as a past http date",
         fault=lambda c: Fault.rate_limited(retry_after=_http_date(-3600)),
         expect=RateLimitError, match="rate limited", config=_STORM, requests=3,
         check=_retry_after(0, 0)),
    Case(name="429, retry-after as an http date an hour ahead",
         fault=lambda c: Fault.rate_limited(retry_after=_http_date(3600)),
         expect=RateLimitError, match="rate limited", config=_STORM, requests=1,
         check=_retry_after(3000, 3700)),
    Case(name="redirect to another host", fault=_redirect, expect=LLMAPIError,
         match="configure that URL", check=_status(307), needs_other=True),
    Case(name="wrong content type", fault=lambda c: Fault.wrong_content_type()),
    Case(name="stream labelled application/json",
         fault=lambda c: Fault.wrong_content_type("application/json"), modes=("stream",),
         per={"openai": (MalformedResponseError, "choices")}),
    Case(name="invalid utf-8", fault=lambda c: Fault.invalid_utf8(),
         expect=MalformedResponseError, match="",
         # SSE is decoded with replacement characters, as the WHATWG spec says.
         per={"openai/stream": (None, ""), "anthropic/stream": (None, "")}),
    Case(name="50 MB body", fault=lambda c: Fault.big_body(50 * 1000 * 1000),
         expect=MalformedResponseError, match="than", within=20.0),
    # -- broken streams -------------------------------------------------------------------
    Case(name="malformed line", fault=lambda c: Fault.malformed_line(1),
         expect=MalformedResponseError, match="JSON"),
    Case(name="truncated frame, clean end", fault=_truncated,
         expect=MalformedResponseError, match="not JSON",
         per={"ollama/stream": (MalformedResponseError, "truncated"),
              "openai/stream": (LLMConnectionError, "ended before the answer was complete"),
              "anthropic/stream": (LLMConnectionError, "ended before the answer was complete")}),
    Case(name="error object mid-stream", fault=lambda c: Fault.error_mid_stream(1),
         expect=LLMAPIError, match="mid-stream", modes=("stream",), check=_status(200)),
    Case(name="connection reset mid-stream", fault=lambda c: _cut(c, True),
         expect=LLMConnectionError, match="mid-response", check=_not_a_timeout),
    Case(name="connection closed mid-stream", fault=lambda c: _cut(c, False),
         expect=LLMConnectionError, match="", check=_not_a_timeout),
)


def _params() -> list[Any]:
    return [
        pytest.param(case, protocol, mode, id=f"{case.name}-{protocol}-{mode}")
        for case in CASES
        for protocol in PROTOCOLS
        for mode in case.modes
    ]


@pytest.mark.parametrize(("case", "protocol", "mode"), _params())
async def test_call_meets_fault(
    case: Case,
    protocol: str,
    mode: str,
    corpus_factory: LLMFactory,
    start_server: Callable[[LoopbackServer], LoopbackServer],
) -> None:
    proto = PROTOCOLS[protocol]
    server = start_server(proto.server())
    expect, match = case.expectation(protocol, mode)
    with contextlib.ExitStack() as stack:
        if case.target == "blackhole":
            address = stack.enter_context(blackhole_server()).host
        elif case.target == "refused":
            address = f"127.0.0.1:{refused_port()}"
        else:
            address = server.url.removeprefix("http://")
        llm = proto.llm(corpus_factory, address, LLMConfig(**case.config))
        if case.target == "server":
            assert await run_call(llm, "unary", "warm up", **PATIENT) == "Echo: warm up"
        before = llm.messages
        seen = server.count(proto.chat_path)
        other: LoopbackServer | None = None
        if case.fault is not None:
            if case.needs_other:
                other = start_server(proto.server())
            ctx = Ctx(protocol=proto, mode=mode, other=other)
            server.push_fault(case.fault(ctx), path=proto.chat_path, times=None)

        started = time.monotonic()
        error: Exception | None = None
        answer = ""
        try:
            answer = await run_call(llm, mode, "hello")
        except Exception as exc:
            error = exc
        elapsed = time.monotonic() - started

        assert elapsed < case.within, f"{case.name}: {elapsed:.2f} s"
        if expect is None:
            assert error is None, repr(error)
            assert "Echo: hello" in answer.replace("\ufffd", "")
            assert len(llm.messages) == len(before) + 2
        else:
            assert isinstance(error, expect), repr(error)
            assert match in str(error), str(error)
            if case.check is not None:
                case.check(error)
            assert llm.messages == before
        if case.requests is not None:
            assert server.count(proto.chat_path) - seen == case.requests
        if other is not None:
            assert other.requests == []  # nothing follows a redirect
        assert await settle_pool(f"http://{address}") <= 1

        if case.target == "server":
            server.clear_faults()
            after = llm.messages
            assert await run_call(llm, mode, "again", **PATIENT) == "Echo: again"
            assert llm.messages[: len(after)] == after
            assert len(llm.messages) == len(after) + 2
            assert await settle_pool(server.url) <= 1
        await llm.aclose()


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_a_deadline_around_a_dripping_stream(
    protocol: str,
    corpus_factory: LLMFactory,
    start_server: Callable[[LoopbackServer], LoopbackServer],
) -> None:
    """A byte every 0.1 s never trips a 1.5 s read timeout; the caller's deadline ends the call.

    ``LLMConfig.timeout`` bounds silence, not the whole answer: a server
    dripping bytes is still answering. An overall deadline is the caller's
    cancel scope (``anyio.fail_after`` / ``move_on_after``), and cancelling
    leaves the history and the pool clean.
    """
    proto = PROTOCOLS[protocol]
    server = start_server(proto.server())
    llm = proto.llm(corpus_factory, server.url.removeprefix("http://"), LLMConfig(timeout=1.5))
    await run_call(llm, "unary", "warm up")
    before = llm.messages
    server.push_fault(Fault.drip_bytes(0.1, 1), path=proto.chat_path)
    started = time.monotonic()
    with anyio.move_on_after(0.6) as scope:  # < the read timeout
        await run_call(llm, "stream", "hello")
    assert scope.cancelled_caught
    assert time.monotonic() - started < 3.0
    assert llm.messages == before
    assert await settle_pool(server.url) <= 1
    assert await run_call(llm, "stream", "again") == "Echo: again"


@pytest.mark.parametrize("mode", MODES)
async def test_a_50_mb_body_is_refused_in_bounded_memory(
    mode: str,
    corpus_factory: LLMFactory,
    start_server: Callable[[LoopbackServer], LoopbackServer],
) -> None:
    """The caps bound memory, not just what is returned: reading stops at the cap (32 MiB
    for a unary answer, 16 MiB for a stream line), and nothing is held beyond it."""
    proto = PROTOCOLS["ollama"]
    server = start_server(proto.server())
    llm = proto.llm(corpus_factory, server.url.removeprefix("http://"), LLMConfig(retries=0))
    server.push_fault(Fault.big_body(50 * 1000 * 1000), path=proto.chat_path)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedResponseError):
            await run_call(llm, mode, "hello")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 * 1024 * 1024, f"{peak / 2**20:.1f} MiB"
