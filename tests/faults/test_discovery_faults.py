"""The fault corpus for discovery: every fault on a probed host, through the factory.

Each case first discovers a healthy host (its models land in a registry file),
then makes it misbehave on every route and discovers again, next to a healthy
Ollama server. The promises of ``docs/discovery.md`` and
``docs/reliability.md``:

* the run ends within the deadline (plus a generous margin), and the healthy
  host is found as usual;
* the faulty host gets the documented status (``unreachable`` or ``error``),
  with an error that says what happened, stored in its host record;
* the registry stays consistent: an ``unreachable`` host's models are marked
  unavailable with their last-seen time kept; an ``error`` host's models are
  left exactly as they were; nothing is deleted; ``PRAGMA integrity_check`` is ok;
* nothing follows a redirect, and a probe asks each route once (no retry storm);
* once the fault is gone, the next discovery finds the host again.

Faults that only test how long a host may take (stalls, drips) run against
Ollama only: the deadline is enforced by discovery, whatever the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from llmfactory import LLMFactory
from llmfactory.config import Settings
from llmfactory.registry.models import LLMModel
from llmfactory.registry.store import Store
from tests.servers import Fault, LoopbackServer, OllamaServer, OpenAICompatServer
from tests.servers.base import CannedResponse

pytestmark = pytest.mark.anyio

DEADLINE = 1.0  # seconds for one host's whole probe (a loopback probe takes ~20 ms)
Start = Callable[[LoopbackServer], LoopbackServer]

SERVERS: dict[str, Callable[[], LoopbackServer]] = {
    "ollama": OllamaServer,
    "lmstudio": lambda: OpenAICompatServer("lmstudio"),
    "openai_compatible": lambda: OpenAICompatServer("vllm"),
}
ALL = tuple(SERVERS)


@dataclass(frozen=True, kw_only=True)
class Case:
    """A fault on every route of the probed host, and the status it must give."""

    name: str
    # Given the redirect target (a second server; None unless needs_other). None: the
    # server is stopped (its port refuses connections).
    fault: Callable[[Any], Fault] | None
    status: str
    match: str
    runtimes: tuple[str, ...] = ALL
    needs_other: bool = False


def _canned(body: str, content_type: str = "application/json") -> Callable[[Any], Fault]:
    return lambda _: Fault(response=CannedResponse(200, body, content_type=content_type))


def _http_error(status: int, *, with_body: bool) -> Callable[[Any], Fault]:
    def fault(_: Any) -> Fault:
        return Fault.http_error(status) if with_body else Fault.http_error(status, None)

    return fault


def _http_date(offset: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=offset)


CASES: tuple[Case, ...] = (
    Case(name="refused port", fault=None, status="unreachable", match="connection refused"),
    Case(name="accepts and never answers", fault=lambda _: Fault.stall_before_headers(30),
         status="unreachable", match="deadline", runtimes=("ollama",)),
    Case(name="headers then silence", fault=lambda _: Fault.stall_after_headers(30),
         status="unreachable", match="deadline", runtimes=("ollama",)),
    Case(name="one byte a second", fault=lambda _: Fault.drip_bytes(1.0, 1),
         status="unreachable", match="deadline", runtimes=("ollama",)),
    Case(name="reset before any response", fault=lambda _: Fault.disconnect_now(),
         status="unreachable", match="cannot connect"),
    Case(name="reset mid-body", fault=lambda _: Fault.cut_after(0), status="unreachable",
         match="cannot connect"),
    Case(name="html instead of json", fault=lambda _: Fault.html(), status="error",
         match="HTML"),
    *(
        Case(name=f"http {status} {'with' if body else 'without'} body",
             fault=_http_error(status, with_body=body),
             status="error", match=f"HTTP {status}",
             # How a probe reads an error status does not depend on the runtime.
             runtimes=ALL if (status, body) == (500, True) else ("ollama",))
        for status in (500, 502, 503)
        for body in (True, False)
    ),
    Case(name="429 with retry-after in seconds", fault=lambda _: Fault.rate_limited(1),
         status="error", match="HTTP 429"),
    Case(name="429 with retry-after as an http date",
         fault=lambda _: Fault.rate_limited(_http_date(30)), status="error", match="HTTP 429",
         runtimes=("ollama",)),
    Case(name="truncated json", fault=_canned('{"models": [{"name": "a'), status="error",
         match="expected JSON"),
    Case(name="an error object with status 200", fault=_canned('{"error": {"message": "x"}}'),
         status="error", match=""),
    Case(name="50 MB body", fault=lambda _: Fault.big_body(50 * 1000 * 1000), status="error",
         match="larger than 8 MiB"),
    Case(name="redirect to another host",
         fault=lambda other: Fault.http_error(302, None, headers={"Location": other.url + "/"}),
         status="error", match="redirected to http://", needs_other=True),
    Case(name="wrong content type", fault=lambda _: Fault.wrong_content_type(), status="ok",
         match=""),
    Case(name="invalid utf-8", fault=lambda _: Fault.invalid_utf8(), status="error",
         match="expected JSON"),
)


def _params() -> list[Any]:
    return [
        pytest.param(case, runtime, id=f"{case.name}-{runtime}")
        for case in CASES
        for runtime in case.runtimes
    ]


def _snapshot(models: list[LLMModel], host: str) -> dict[str, tuple[Any, ...]]:
    return {
        m.identifier: (m.available, m.last_seen, m.first_seen, m.context_length, m.digest,
                       m.capabilities)
        for m in models
        if m.host == host
    }


@pytest.fixture
def file_factory(home: Any) -> Any:
    """A factory on a registry file in this test's home; discovery only when asked."""
    settings = Settings.load()
    settings = replace(settings, discovery=replace(settings.discovery, deadline=DEADLINE,
                                                   connect_timeout=0.5))
    factory = LLMFactory(settings=settings, discover=False, seed_catalog=False)
    factory.ensure_initialized()
    yield factory
    factory.close()


@pytest.mark.parametrize(("case", "runtime"), _params())
async def test_discovery_meets_fault(
    case: Case, runtime: str, file_factory: LLMFactory, start_server: Start
) -> None:
    factory = file_factory
    server = start_server(SERVERS[runtime]())
    healthy = start_server(OllamaServer())
    hosts = [(runtime, server.url), ("ollama", healthy.url)]
    address = server.url.removeprefix("http://")
    key = f"{runtime}@{address}"

    first = await factory.arefresh(hosts)
    assert first.host(key) is not None and first.host(key).status == "ok"  # type: ignore[union-attr]
    before = _snapshot(factory.store.load_models(), address)
    assert before and all(available for available, *_ in before.values())

    other = start_server(OllamaServer()) if case.needs_other else None
    if case.fault is None:
        server.stop_and_keep_port()
    else:
        server.push_fault(case.fault(other), times=None)
    seen = len(server.requests)
    started = time.monotonic()
    report = await factory.arefresh(hosts)
    elapsed = time.monotonic() - started

    assert elapsed < DEADLINE + 2.5, elapsed
    bad = report.host(key)
    assert bad is not None and bad.status == case.status, bad
    assert case.match in (bad.error or ""), bad.error
    good = report.host(f"ollama@{healthy.url.removeprefix('http://')}")
    assert good is not None and good.status == "ok" and good.model_count == 3

    after = _snapshot(factory.store.load_models(), address)
    assert set(after) == set(before)  # discovery never deletes
    if case.status == "error":
        assert after == before
    elif case.status == "unreachable":
        for identifier, (available, last_seen, *rest) in after.items():
            assert not available
            assert (last_seen, *rest) == before[identifier][1:]
    else:
        assert all(available for available, *_ in after.values())
    record = next(r for r in factory.store.load_hosts() if r.key == key)
    assert record.status == case.status and record.last_error == bad.error
    assert factory.store.integrity_check() == "ok"
    if other is not None:
        assert other.requests == []
    asked = [(r.path, r.body) for r in server.requests[seen:]]
    assert len(asked) == len(set(asked)), asked  # each request made once: no retries

    # Keep going: the host is back, and found again.
    if case.fault is None:
        server.restart()
    server.clear_faults()
    again = await factory.arefresh(hosts)
    assert again.host(key).status == "ok"  # type: ignore[union-attr]
    assert all(available for available, *_ in
               _snapshot(factory.store.load_models(), address).values())


def test_registry_stays_consistent_across_many_faulty_discoveries(
    home: Any, start_server: Start
) -> None:
    """Twenty discoveries in a row, each host failing differently each time: the file stays
    sound, nothing is lost, and every model is back once the hosts behave."""
    faults = [
        Fault.http_error(500), Fault.html(), Fault.disconnect_now(), Fault.cut_after(0),
        Fault.big_body(9 * 1024 * 1024), Fault.invalid_utf8(), None,
    ]
    servers = [start_server(SERVERS[r]()) for r in ALL]
    hosts = [(r, s.url) for r, s in zip(ALL, servers, strict=True)]
    settings = Settings.load()
    settings = replace(settings, discovery=replace(settings.discovery, deadline=DEADLINE))
    factory = LLMFactory(settings=settings, discover=False)
    factory.refresh(hosts)
    known = {m.identifier for m in factory.list_models() if m.source == "discovered"}
    assert len(known) >= 6
    for round_ in range(20):
        for n, server in enumerate(servers):
            server.clear_faults()
            fault = faults[(round_ + n) % len(faults)]
            if fault is not None:
                server.push_fault(fault, times=None)
        factory.refresh(hosts)
        assert {m.identifier for m in factory.store.load_models()} >= known
    for server in servers:
        server.clear_faults()
    report = factory.refresh(hosts)
    assert [h.status for h in report.hosts] == ["ok"] * 3
    assert all(factory.find_model(i).available for i in known)  # type: ignore[union-attr]
    factory.close()
    store = Store(Settings.load().database_url)
    assert store.integrity_check() == "ok"
    store.close()
