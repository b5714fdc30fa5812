"""Discovery: bounded probing of many hosts, faults, and reconciling into the registry."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from llmfactory import LLMFactory, ModelNotFoundError
from llmfactory.config import Settings
from llmfactory.identifiers import HostAddress
from llmfactory.registry.models import LLMModel
from llmfactory.runtimes.base import Host, ProbeResult
from llmfactory.runtimes.discovery import (
    HostOutcome,
    HostReport,
    ProbeOptions,
    probe_hosts,
    reconcile,
)
from llmfactory.runtimes.hosts import host_from_url
from tests.servers import BlackholeServer, Fault, OllamaServer, refused_port
from tests.servers.base import CannedResponse

Start = Callable[[OllamaServer], OllamaServer]


# -- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def syn_dropping_port() -> Iterator[int]:
    """A port whose SYNs are dropped (a listener with a full backlog): connects hang."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _factory(deadline: float = 3.0, **discovery: object) -> LLMFactory:
    """An isolated in-memory factory; probing only what a test names."""
    settings = Settings.load()
    settings = replace(settings, discovery=replace(settings.discovery, deadline=deadline,
                                                   **discovery))  # type: ignore[arg-type]
    return LLMFactory(database_url="sqlite://", settings=settings, discover=False)


@pytest.fixture
def make_factory() -> Iterator[Callable[..., LLMFactory]]:
    made: list[LLMFactory] = []

    def make(**kwargs: object) -> LLMFactory:
        f = _factory(**kwargs)  # type: ignore[arg-type]
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def _host(server: OllamaServer | BlackholeServer | str, runtime: str = "ollama") -> Host:
    url = server if isinstance(server, str) else server.url
    return host_from_url(runtime, url, source="explicit")


# -- probing: time bounds ----------------------------------------------------------------


@pytest.mark.anyio
async def test_a_black_holed_host_costs_at_most_the_deadline(
    ollama_server: OllamaServer, blackhole: BlackholeServer
) -> None:
    refused = f"127.0.0.1:{refused_port()}"
    start = time.perf_counter()
    outcomes, _ = await probe_hosts(
        [_host(blackhole), _host(ollama_server), _host(refused)],
        ProbeOptions(deadline=1.0, connect_timeout=0.5),
    )
    elapsed = time.perf_counter() - start
    assert elapsed < 2.5, elapsed
    reports = {o.host.key: o.report for o in outcomes}
    hole = reports[f"ollama@{blackhole.host}"]
    assert hole.status == "unreachable" and "deadline" in (hole.error or "")
    assert reports[f"ollama@{ollama_server.host}"].status == "ok"
    assert reports[f"ollama@{ollama_server.host}"].elapsed < 1.0  # not held up by the hole
    gone = reports[f"ollama@{refused}"]
    assert gone.status == "unreachable" and "refused" in (gone.error or "")
    assert gone.elapsed < 0.5


@pytest.mark.anyio
async def test_a_host_dropping_packets_costs_the_connect_timeout() -> None:
    with syn_dropping_port() as port:
        start = time.perf_counter()
        outcomes, _ = await probe_hosts(
            [_host(f"127.0.0.1:{port}")], ProbeOptions(deadline=3.0, connect_timeout=0.3)
        )
        elapsed = time.perf_counter() - start
    assert outcomes[0].report.status == "unreachable"
    assert "no connection within 0.3 s" in (outcomes[0].report.error or "")
    assert elapsed < 1.5, elapsed


@pytest.mark.anyio
async def test_refused_ports_cost_nothing() -> None:
    hosts = [_host(f"127.0.0.1:{refused_port()}", rt) for rt in ("ollama", "lmstudio")]
    start = time.perf_counter()
    outcomes, _ = await probe_hosts(hosts, ProbeOptions(deadline=3.0))
    assert time.perf_counter() - start < 1.0
    assert [o.report.status for o in outcomes] == ["unreachable", "unreachable"]


def test_start_up_with_nothing_running_does_not_even_import_httpx(
    cli_env: dict[str, str],
) -> None:
    """Refused ports are settled by a TCP connect: httpx is never imported."""
    cli_env.pop("LLMFACTORY_NO_DEFAULT_HOSTS", None)
    cli_env["OLLAMA_HOST"] = f"127.0.0.1:{refused_port()}"
    cli_env["LMSTUDIO_HOST"] = f"127.0.0.1:{refused_port()}"
    code = (
        "import sys, time, json; from llmfactory import LLMFactory; f = LLMFactory(); "
        "t = time.perf_counter(); f.ensure_initialized(); t = time.perf_counter() - t; "
        "r = f.last_discovery; print(json.dumps({'t': t, 'httpx': 'httpx' in sys.modules, "
        "'status': [h.status for h in r.hosts], 'probe': r.elapsed}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=cli_env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    data = json.loads(out)
    assert data["status"] == ["unreachable", "unreachable"]
    assert not data["httpx"]
    assert data["probe"] < 0.5, data


# -- probing: faults ----------------------------------------------------------------------


FAULTS = {
    "html": (Fault.html(), "/api/version", "HTML"),
    "http 500": (Fault.http_error(500), "/api/version", "HTTP 500"),
    "malformed json": (
        Fault(response=CannedResponse(200, '{"version": "0.1', content_type="application/json")),
        "/api/version",
        "expected JSON",
    ),
    "10 MB body": (Fault.big_body(10 * 1024 * 1024), "/api/tags", "larger than 8 MiB"),
    "redirect": (
        Fault.http_error(302, "", headers={"Location": "http://elsewhere:1/"}),
        "/api/version",
        "redirected",
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_faults_are_recorded_per_host(
    fault: str, start_server: Start, ollama_server: OllamaServer
) -> None:
    broken = start_server(OllamaServer())
    what, path, words = FAULTS[fault]
    broken.push_fault(what, path=path, times=None)
    start = time.perf_counter()
    outcomes, _ = await probe_hosts([_host(broken), _host(ollama_server)],
                                    ProbeOptions(deadline=5.0))
    assert time.perf_counter() - start < 5.0  # the fault is found, not the deadline
    bad, good = outcomes
    assert bad.report.status == "error", bad.report
    assert words in (bad.report.error or ""), bad.report.error
    assert bad.result is None
    assert good.report.status == "ok" and good.report.model_count == 3


@pytest.mark.anyio
async def test_a_dropped_connection_is_unreachable(ollama_server: OllamaServer) -> None:
    ollama_server.push_fault(Fault.disconnect_now(), path="/api/version", times=None)
    outcomes, _ = await probe_hosts([_host(ollama_server)], ProbeOptions(deadline=2.0))
    assert outcomes[0].report.status == "unreachable"


@pytest.mark.anyio
async def test_status_callback_sees_every_host_start_and_end(
    ollama_server: OllamaServer,
) -> None:
    seen: list[tuple[str, str]] = []
    refused = _host(f"127.0.0.1:{refused_port()}")
    await probe_hosts([_host(ollama_server), refused], ProbeOptions(),
                      on_status=lambda r: seen.append((r.key, r.status)))
    assert sorted(seen) == sorted([
        (f"ollama@{ollama_server.host}", "probing"), (f"ollama@{ollama_server.host}", "ok"),
        (refused.key, "probing"), (refused.key, "unreachable")])


# -- reconciling ----------------------------------------------------------------------------


def _model(identifier: str, **fields: object) -> LLMModel:
    name, _, rest = identifier.rpartition(":ollama@")
    return LLMModel(identifier=identifier, name=name, runtime="ollama", host=rest,
                    source="discovered", **fields)  # type: ignore[arg-type]


def _outcome(host: str, status: str, models: list[LLMModel] | None = None) -> HostOutcome:
    h = Host(runtime="ollama", address=HostAddress(host.split(":")[0], int(host.split(":")[1])))
    report = HostReport(runtime="ollama", address=host, base_url=h.base_url, source="user",
                        status=status)
    result = ProbeResult(runtime="ollama", models=tuple(models or ())) if status == "ok" else None
    return HostOutcome(host=h, report=report, result=result)


def test_reconcile_rules() -> None:
    existing = [
        _model("a:ollama@h1:1"), _model("gone:ollama@h1:1"),
        _model("pinned:ollama@h1:1", user_fields=["available"]),
        _model("b:ollama@h2:1"), _model("c:ollama@h3:1"),
        _model("old:ollama@h2:1", available=False),
    ]
    changes = reconcile(
        [
            _outcome("h1:1", "ok", [_model("a:ollama@h1:1"), _model("new:ollama@h1:1")]),
            _outcome("h2:1", "unreachable"),
            _outcome("h3:1", "error"),
        ],
        existing,
    )
    assert changes.added == ("new:ollama@h1:1",)
    assert changes.updated == ("a:ollama@h1:1",)
    assert sorted(changes.unavailable) == ["b:ollama@h2:1", "gone:ollama@h1:1"]
    assert [m.identifier for m in changes.upserts] == ["a:ollama@h1:1", "new:ollama@h1:1"]


def test_a_host_that_goes_down_and_comes_back(
    make_factory: Callable[..., LLMFactory], ollama_server: OllamaServer
) -> None:
    factory = make_factory(deadline=1.0)
    host = f"ollama={ollama_server.url}"
    report = factory.refresh([host])
    assert len(report.added) == 3 and report.ok
    ident = f"llama3.2:latest:ollama@{ollama_server.host}"
    seen = factory.get_model(ident).last_seen

    ollama_server.stop_and_keep_port()
    start = time.perf_counter()
    report = factory.refresh([host])
    assert time.perf_counter() - start < 1.0  # refused: no waiting for the deadline
    assert report.unreachable and len(report.unavailable) == 3
    down = factory.get_model(ident)
    assert not down.available and down.last_seen == seen  # kept, with its last-seen time
    assert down.context_length == 131072  # and everything else it had
    assert factory.store.get_model(ident) is not None
    record = next(h for h in factory.hosts() if h.address == ollama_server.host)
    assert record.status == "unreachable" and record.last_error
    assert record.model_count == 3  # from the last time it answered

    ollama_server.restart()
    report = factory.refresh([host])
    assert report.ok and len(report.updated) == 3 and not report.unavailable
    back = factory.get_model(ident)
    assert back.available and back.last_seen > seen
    assert factory.store.get_model(ident).available  # type: ignore[union-attr]
    assert factory.list_models(runtime="ollama", available=True)


def test_a_model_removed_from_a_host_is_marked_unavailable_not_deleted(
    make_factory: Callable[..., LLMFactory], ollama_server: OllamaServer
) -> None:
    factory = make_factory()
    factory.refresh([f"ollama={ollama_server.url}"])
    ollama_server.remove_model("qwen3:4b")
    report = factory.refresh([f"ollama={ollama_server.url}"])
    gone = f"qwen3:4b:ollama@{ollama_server.host}"
    assert report.unavailable == (gone,)
    assert not factory.get_model(gone).available
    assert factory.get_model(f"llama3.2:latest:ollama@{ollama_server.host}").available


def test_a_host_answering_wrongly_leaves_its_models_as_they_were(
    make_factory: Callable[..., LLMFactory], ollama_server: OllamaServer
) -> None:
    factory = make_factory()
    factory.refresh([f"ollama={ollama_server.url}"])
    ollama_server.push_fault(Fault.html(), path="/api/version", times=None)
    report = factory.refresh([f"ollama={ollama_server.url}"])
    assert report.errors and not report.unavailable
    assert all(m.available for m in factory.list_models(runtime="ollama"))
    record = next(h for h in factory.hosts() if h.address == ollama_server.host)
    assert record.status == "error" and "HTML" in (record.last_error or "")
    assert record.version == ollama_server.version  # from when it last answered


def test_what_the_user_set_survives_rediscovery(
    make_factory: Callable[..., LLMFactory], ollama_server: OllamaServer
) -> None:
    factory = make_factory()
    factory.refresh([f"ollama={ollama_server.url}"])
    ident = f"llama3.2:latest:ollama@{ollama_server.host}"
    factory.register_model(ident, context_length=8192, input_price_per_million=0.5,
                           output_price_per_million=1.5)
    factory.set_alias("mine", ident)
    for _ in range(2):
        factory.refresh([f"ollama={ollama_server.url}"])
    model = factory.get_model("mine")
    assert model.identifier == ident
    assert model.context_length == 8192
    assert (model.input_price_per_million, model.output_price_per_million) == (0.5, 1.5)
    assert model.extras["num_ctx"] == 4096 and model.available
    stored = factory.store.get_model(ident)
    assert stored is not None and stored.context_length == 8192


def test_the_digest_cache_lives_in_the_registry(home: Path, ollama_server: OllamaServer) -> None:
    url = f"sqlite:///{home / 'registry.db'}"
    first = LLMFactory(database_url=url, discover=False)
    first.refresh([f"ollama={ollama_server.url}"])
    first.close()
    assert ollama_server.show_calls == 3
    second = LLMFactory(database_url=url, discover=False)
    t = time.perf_counter()
    report = second.refresh([f"ollama={ollama_server.url}"])
    assert time.perf_counter() - t < 2.0
    second.close()
    assert ollama_server.show_calls == 3  # unchanged digests: not described again
    assert len(report.updated) == 3


# -- the factory's entry points ------------------------------------------------------------


def test_start_up_discovery_probes_once(
    monkeypatch: pytest.MonkeyPatch, ollama_server: OllamaServer
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.host)
    factory = LLMFactory()
    try:
        factory.ensure_initialized()
        report = factory.last_discovery
        assert report is not None and report.ok
        ident = f"llama3.2:latest:ollama@{ollama_server.host}"
        assert factory.get_model(ident).context_length == 131072
        assert factory.get_model("llama3.2").identifier == ident  # a unique name
        calls = len(ollama_server.requests)
        factory.ensure_initialized()
        factory.list_models()
        assert len(ollama_server.requests) == calls  # once per process
        factory.refresh()
        assert len(ollama_server.requests) > calls
    finally:
        factory.close()


def test_discovery_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch, ollama_server: OllamaServer
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.host)
    monkeypatch.setenv("LLMFACTORY_NO_DISCOVER", "1")
    factory = LLMFactory()
    try:
        factory.ensure_initialized()
        assert factory.last_discovery is None and not ollama_server.requests
        with pytest.raises(ModelNotFoundError):
            factory.get_model(f"llama3.2:ollama@{ollama_server.host}")
        assert not ollama_server.requests  # no on-demand probe either
    finally:
        factory.close()


def test_an_identifier_on_an_unknown_host_is_probed_on_demand(
    ollama_server: OllamaServer,
) -> None:
    factory = LLMFactory(database_url="sqlite://")
    try:
        factory.ensure_initialized()
        assert not ollama_server.requests  # nothing configured
        model = factory.get_model(f"llama3.2:ollama@{ollama_server.host}")
        assert model.identifier == f"llama3.2:latest:ollama@{ollama_server.host}"
        assert model.context_length == 131072
        calls = len(ollama_server.requests)
        with pytest.raises(ModelNotFoundError) as info:
            factory.get_model(f"nope:ollama@{ollama_server.host}")
        assert len(ollama_server.requests) == calls  # a known host is not probed again
        assert info.value.suggestions
        record = next(h for h in factory.hosts() if h.address == ollama_server.host)
        assert record.source == "identifier" and record.status == "ok"
        dead = f"127.0.0.1:{refused_port()}"
        with pytest.raises(ModelNotFoundError):
            factory.get_model(f"x:ollama@{dead}")
        assert all(h.address != dead for h in factory.hosts())  # not remembered
    finally:
        factory.close()


def test_add_host_persists_and_is_probed_by_later_processes(
    home: Path, ollama_server: OllamaServer
) -> None:
    factory = LLMFactory()
    try:
        record = factory.add_host("ollama", ollama_server.url)
        assert (record.status, record.model_count, record.source) == ("ok", 3, "user")
        assert record.version == ollama_server.version and record.last_seen is not None
        assert factory.list_models(runtime="ollama")
    finally:
        factory.close()
    later = LLMFactory()
    try:
        later.ensure_initialized()  # start-up discovery probes the added host
        report = later.last_discovery
        assert report is not None and [h.key for h in report.hosts] == [
            f"ollama@{ollama_server.host}"]
        assert any(h.source == "user" for h in later.hosts())
        assert later.remove_host("ollama", ollama_server.url)
        assert not later.remove_host("ollama", ollama_server.url)
        assert later.list_models(runtime="ollama")  # its models stay
        assert all(h.source != "user" for h in later.hosts())
    finally:
        later.close()


def test_hosts_lists_configured_hosts_not_probed_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMFACTORY_HOSTS", "lmstudio=studio-box:1234")
    factory = LLMFactory(database_url="sqlite://", discover=False)
    try:
        records = factory.hosts()
        assert [(r.key, r.status, r.source) for r in records] == [
            ("lmstudio@studio-box:1234", "unknown", "env")]
    finally:
        factory.close()


@pytest.mark.anyio
async def test_arefresh_and_the_sync_facade_inside_an_event_loop(
    make_factory: Callable[..., LLMFactory], ollama_server: OllamaServer
) -> None:
    factory = make_factory()
    report = await factory.arefresh([f"ollama={ollama_server.url}"])
    assert report.ok and len(report.added) == 3
    # The sync API called from async code runs its own loop in a worker thread.
    report = factory.refresh([f"ollama={ollama_server.url}"])
    assert report.ok and len(report.updated) == 3


def test_report_shapes(make_factory: Callable[..., LLMFactory],
                       ollama_server: OllamaServer) -> None:
    factory = make_factory()
    report = factory.refresh([ollama_server.url])  # port-less runtime guess: openai_compatible
    assert report.hosts[0].runtime == "openai_compatible"
    data = report.to_dict()
    assert data["summary"]["ok"] == 1 and data["hosts"][0]["status"] == "ok"
    json.dumps(data)
    assert "1 ok" in report.summary()
    assert report.host(report.hosts[0].key) is report.hosts[0]
    assert report.started_at <= datetime.now(timezone.utc)


@pytest.mark.anyio
async def test_what_a_probe_offered_survives_the_deadline(
    ollama_server: OllamaServer,
) -> None:
    """A probe cut by the deadline after listing still records what it listed."""
    import anyio

    from llmfactory.runtimes.base import discovered_model, register_runtime, unregister_runtime

    class Sleepy:
        name = "sleepy"
        default_port = 1

        async def probe(self, client: Any, host: Host) -> ProbeResult:
            now = datetime.now(timezone.utc)
            client.offer(ProbeResult(runtime="sleepy", version="1",
                                     models=(discovered_model(host, "m", now=now),),
                                     warnings=("not finished",)))
            await anyio.sleep(60)
            raise AssertionError("not reached")  # pragma: no cover

    register_runtime(Sleepy)
    try:
        start = time.perf_counter()
        outcomes, _ = await probe_hosts([_host(ollama_server, "sleepy")],
                                        ProbeOptions(deadline=0.5))
        assert time.perf_counter() - start < 1.5
    finally:
        unregister_runtime("sleepy")
        from llmfactory.identifiers import DEFAULT_PORTS

        DEFAULT_PORTS.pop("sleepy", None)
    report = outcomes[0].report
    assert (report.status, report.model_count, report.warnings) == ("ok", 1, ("not finished",))
