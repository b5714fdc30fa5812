"""Health: llm.health_check(), LLMFactory.check_hosts(), cool-downs and host records."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from llmfactory import LLMFactory
from llmfactory.health import HostHealth, health_of
from tests.api.chat_support import clients  # noqa: F401  (a fixture)
from tests.servers import (
    AnthropicServer,
    BlackholeServer,
    Fault,
    OllamaServer,
    OpenAICompatServer,
    refused_port,
)
from tests.servers.base import LoopbackServer
from tests.servers.fixtures import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY

S = TypeVar("S", bound=LoopbackServer)


def _record(factory: LLMFactory, key: str) -> object:
    return next(r for r in factory.hosts() if r.key == key)


def test_cooldowns() -> None:
    health = HostHealth(cooldown=30)
    assert not health.is_cooling_down("ollama@a:1")
    health.mark_unhealthy("ollama@a:1", "refused")
    health.mark_unhealthy("ollama@b:1", "refused", cooldown=0)
    assert health.is_cooling_down("ollama@a:1") and not health.is_cooling_down("ollama@b:1")
    assert list(health.cooldowns()) == ["ollama@a:1"]
    assert 29 < health.cooldowns()["ollama@a:1"].remaining <= 30
    assert health.mark_healthy("ollama@a:1") and not health.mark_healthy("ollama@a:1")
    assert "cooling=[]" in repr(health)
    assert health_of(None) is health_of(None)


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_health_check_of_an_ollama_model(factory: LLMFactory,
                                               ollama_server: OllamaServer) -> None:
    factory.add_host("ollama", ollama_server.url)
    key = f"ollama@{ollama_server.host}"
    llm = factory.create_llm("llama3.2")
    report = await llm.health_check()
    assert report.ok and report.listed is True and report.loaded is False
    assert report.url == f"{ollama_server.url}/api/tags" and report.latency_ms > 0
    ollama_server.set_loaded("llama3.2:latest", True)
    assert (await llm.health_check()).loaded is True
    assert ollama_server.count("/api/chat") == 0  # nothing generated

    missing = await factory.create_llm(f"nope:ollama@{ollama_server.host}").health_check()
    assert missing.status == "missing" and not missing.ok and missing.listed is False

    ollama_server.push_fault(Fault.http_error(500), path="/api/tags")
    failing = await llm.health_check()
    assert failing.status == "error" and "500" in (failing.error or "")
    assert factory.host_health.is_cooling_down(key)
    assert _record(factory, key).status == "error"  # type: ignore[attr-defined]

    ollama_server.stop_and_keep_port()
    down = await llm.health_check(timeout=1.0)
    assert down.status == "unreachable" and down.error
    assert _record(factory, key).status == "unreachable"  # type: ignore[attr-defined]

    ollama_server.restart()
    assert (await llm.health_check()).ok
    assert not factory.host_health.is_cooling_down(key)
    record = _record(factory, key)
    assert record.status == "ok" and record.last_error is None  # type: ignore[attr-defined]


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_health_check_of_other_protocols(
    factory: LLMFactory, lmstudio_server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch,
    start_server: Callable[[S], S],
) -> None:
    lm = factory.create_llm(f"qwen/qwen3-4b:lmstudio@{lmstudio_server.host}")
    report = await lm.health_check()
    assert report.ok and report.url == f"{lmstudio_server.url}/v1/models" and report.listed

    cloud = factory.create_llm("gpt-4o-mini")
    no_key = await cloud.health_check()  # never raises: the report says what is wrong
    assert no_key.status == "error" and "OPENAI_API_KEY" in (no_key.error or "")
    assert not factory.host_health.is_cooling_down("api@openai")  # not the service's fault

    openai = OpenAICompatServer("openai", api_key=OPENAI_TEST_KEY)
    anthropic = AnthropicServer(api_key=ANTHROPIC_TEST_KEY)
    start_server(openai)
    start_server(anthropic)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{openai.url}/v1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic.url)
    assert (await factory.create_llm("gpt-4o-mini").health_check()).ok
    claude = factory.list_models(provider="anthropic")[0]
    report = await factory.create_llm(claude).health_check()
    assert report.url == f"{anthropic.url}/v1/models" and report.status in ("ok", "missing")
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    refused = await factory.create_llm("gpt-4o-mini").health_check()
    assert refused.status == "error" and not factory.host_health.is_cooling_down("api@openai")


def test_check_hosts(factory: LLMFactory, ollama_server: OllamaServer,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    dead = refused_port()
    factory.add_host("ollama", ollama_server.url, probe=False)
    factory.add_host("ollama", f"http://127.0.0.1:{dead}", probe=False)
    monkeypatch.setenv("LMSTUDIO_HOST", f"127.0.0.1:{refused_port()}")  # configured, not stored
    reports = {r.key: r for r in factory.check_hosts(timeout=1.0)}
    ok, down = f"ollama@{ollama_server.host}", f"ollama@127.0.0.1:{dead}"
    assert reports[ok].status == "ok" and reports[ok].version == ollama_server.version
    assert reports[down].status == "unreachable" and reports[down].error
    assert len(reports) == 3
    records = {r.key: r for r in factory.hosts()}
    assert records[ok].status == "ok" and records[ok].version == ollama_server.version
    assert records[ok].last_checked is not None and records[ok].model_count == 0  # no listing
    assert records[down].status == "unreachable" and records[down].source == "user"
    assert factory.host_health.is_cooling_down(down)
    assert ollama_server.count("/api/tags") == 0  # cheap: no listing, no describing

    ollama_server.stop_and_keep_port()
    assert factory.check_hosts([f"ollama={ollama_server.url}"])[0].status == "unreachable"
    ollama_server.restart()
    assert factory.check_hosts([("ollama", ollama_server.url)])[0].status == "ok"
    assert not factory.host_health.is_cooling_down(ok)


@pytest.mark.anyio
async def test_check_hosts_is_bounded(factory: LLMFactory, blackhole: BlackholeServer,
                                      lmstudio_server: OpenAICompatServer) -> None:
    start = time.perf_counter()
    reports = await factory.acheck_hosts(
        [f"ollama={blackhole.url}", f"lmstudio={lmstudio_server.url}"], timeout=0.3)
    assert time.perf_counter() - start < 2.0
    assert [r.status for r in reports] == ["unreachable", "ok"]
    assert "0.3 s" in (reports[0].error or "")
