"""DNS-SD on the loopback interface: announce runtimes, browse for them, discover them.

Everything runs on 127.0.0.1 only; every Zeroconf instance is closed; waits are bounded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from llmfactory import LLMFactory
from llmfactory.runtimes.mdns import (
    GENERIC_SERVICE_TYPE,
    SERVICE_TYPES,
    Announcement,
    browse,
    interfaces_from_env,
    service_type_for,
)
from tests.servers import OllamaServer, OpenAICompatServer

LOOPBACK = ["127.0.0.1"]


@dataclass
class Announced:
    ollama: OllamaServer
    vllm: OpenAICompatServer


def _loopback_multicast_or_skip() -> None:
    from zeroconf import IPVersion, Zeroconf

    try:
        Zeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only).close()
    except OSError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"multicast on the loopback interface does not work here: {exc}")


@pytest.fixture(scope="module")
def announced() -> Iterator[Announced]:
    """An Ollama server announced under its own type, a vLLM one under the generic type."""
    _loopback_multicast_or_skip()
    with OllamaServer() as ollama, OpenAICompatServer("vllm") as vllm:
        announcements = [
            Announcement("ollama", ollama.port, version=ollama.version, interfaces=LOOPBACK,
                         name="test ollama"),
            Announcement("openai_compatible", vllm.port, interfaces=LOOPBACK, name="test vllm"),
        ]
        # Registering probes the network for name conflicts (~1.5 s): do both at once.
        threads = [threading.Thread(target=a.start) for a in announcements]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        try:
            yield Announced(ollama, vllm)
        finally:
            for a in announcements:
                a.close()


def test_service_types() -> None:
    assert service_type_for("ollama") == SERVICE_TYPES["ollama"] == "_ollama._tcp.local."
    assert service_type_for("lmstudio") == "_lmstudio._tcp.local."
    assert service_type_for("openai_compatible") == GENERIC_SERVICE_TYPE
    assert interfaces_from_env({"LLMFACTORY_MDNS_INTERFACES": " 127.0.0.1 , "}) == LOOPBACK
    assert interfaces_from_env({}) is None
    a = Announcement("ollama", 11434, version="0.12.6", path="/x")
    assert a.properties == {"runtime": "ollama", "path": "/x", "version": "0.12.6",
                            "api": "ollama"}


def test_browse_finds_announced_runtimes(announced: Announced) -> None:
    hosts, problems = browse(2.0, interfaces=LOOPBACK)
    keys = {h.key for h in hosts}
    assert f"ollama@127.0.0.1:{announced.ollama.port}" in keys, (keys, problems)
    assert f"openai_compatible@127.0.0.1:{announced.vllm.port}" in keys, (keys, problems)
    assert all(h.source == "mdns" for h in hosts)


def test_discovery_with_mdns_registers_what_the_lan_serves(
    announced: Announced, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMFACTORY_MDNS_INTERFACES", "127.0.0.1")
    factory = LLMFactory(database_url="sqlite://", discover=False)
    try:
        report = factory.refresh([], mdns=True)
        keys = {h.key: h for h in report.hosts}
        ollama_key = f"ollama@127.0.0.1:{announced.ollama.port}"
        assert keys[ollama_key].status == "ok" and keys[ollama_key].source == "mdns"
        assert factory.get_model(f"qwen3:4b:ollama@127.0.0.1:{announced.ollama.port}")
        assert factory.list_models(runtime="openai_compatible", available=True)
        record = next(h for h in factory.hosts() if h.key == ollama_key)
        assert record.source == "mdns" and record.status == "ok"
    finally:
        factory.close()


def test_cli_discover_mdns_and_announce(
    announced: Announced, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmfactory.cli.discovery  # noqa: F401  (registers the commands)
    from llmfactory.cli import cli

    monkeypatch.setenv("LLMFACTORY_MDNS_INTERFACES", "127.0.0.1")
    runner = CliRunner()
    result = runner.invoke(cli, ["discover", "--mdns", "--json", "--quiet"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert f"ollama@127.0.0.1:{announced.ollama.port}" in {
        f"{h['runtime']}@{h['address']}" for h in data["hosts"]}

    result = runner.invoke(
        cli,
        ["announce", "--runtime", "ollama", "--port", str(announced.ollama.port),
         "--interface", "127.0.0.1", "--duration", "0", "--name", "cli test"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert f"version={announced.ollama.version}" in result.stdout  # asked from the runtime
    assert "announcement withdrawn" in result.stdout
