"""A third-party runtime, registered through an entry point built at test time."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmfactory import LLMFactory, parse_identifier
from llmfactory.errors import ConfigError
from llmfactory.identifiers import DEFAULT_PORTS
from llmfactory.runtimes.base import (
    get_runtime,
    load_runtimes,
    plugin_errors,
    register_runtime,
    runtime_names,
    unregister_runtime,
)
from tests.servers import OpenAICompatServer

PLUGIN = '''
"""A runtime plugin as a third party would write it."""
from datetime import datetime, timezone

from llmfactory.runtimes.base import ProbeResult, discovered_model


class FakeRuntime:
    name = "fakert"
    default_port = 18080
    env_var = None
    service_type = "_fakert._tcp.local."

    async def probe(self, client, host):
        body = await client.get_json("/v1/models")
        now = datetime.now(timezone.utc)
        models = tuple(
            discovered_model(host, item["id"], now=now, capabilities=["chat"],
                             context_length=item.get("max_model_len"))
            for item in body["data"]
        )
        return ProbeResult(runtime=self.name, version="9.9", models=models)
'''


@pytest.fixture
def plugin_on_path(tmp_path: Path) -> Iterator[Path]:
    """A package with a runtime plugin and a broken one, installed as a dist-info on sys.path."""
    (tmp_path / "llmf_fake_runtime.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "llmf_fake_runtime-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: llmf-fake-runtime\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[llmfactory.runtimes]\n"
        "fakert = llmf_fake_runtime:FakeRuntime\n"
        "broken = llmf_no_such_module:Runtime\n"
    )
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("llmf_fake_runtime", None)
        importlib.invalidate_caches()
        unregister_runtime("fakert")
        DEFAULT_PORTS.pop("fakert", None)
        load_runtimes(reload=True)


def test_a_plugin_runtime_is_loaded_and_discovered(plugin_on_path: Path) -> None:
    runtimes = load_runtimes(reload=True)
    assert {"ollama", "lmstudio", "openai_compatible", "fakert"} <= set(runtimes)
    assert "fakert" in runtime_names()
    assert any("broken" in e for e in plugin_errors())  # skipped, reported, harmless
    assert DEFAULT_PORTS["fakert"] == 18080
    assert parse_identifier("m:fakert@box").host == "box:18080"

    server = OpenAICompatServer("vllm").start()
    try:
        factory = LLMFactory(database_url="sqlite://", discover=False)
        try:
            report = factory.refresh([("fakert", server.url)])
            host = report.hosts[0]
            assert (host.status, host.version, host.model_count) == ("ok", "9.9", 1)
            assert any("broken" in w for w in report.warnings)
            model = factory.get_model(f"Qwen/Qwen2.5-0.5B-Instruct:fakert@{server.host}")
            assert model.runtime == "fakert" and model.context_length == 32768
            added = factory.add_host("fakert", server.url)
            assert added.status == "ok"
        finally:
            factory.close()
    finally:
        server.stop()


def test_register_runtime_from_code() -> None:
    class CodeRuntime:
        name = "coded"
        default_port = 4321

        async def probe(self, client: object, host: object) -> object:  # pragma: no cover
            raise NotImplementedError

    try:
        runtime = register_runtime(CodeRuntime)
        assert get_runtime("coded") is runtime
        assert runtime.env_var is None and runtime.service_type is None  # filled in
        with pytest.raises(ConfigError, match="already registered"):
            register_runtime(CodeRuntime)
        with pytest.raises(ConfigError, match="lower-case word"):
            bad = type("Bad", (), {"name": "Not OK", "default_port": 1, "probe": None})
            register_runtime(bad)
        with pytest.raises(ConfigError, match="lacks"):
            register_runtime(type("Nothing", (), {}))
    finally:
        unregister_runtime("coded")
        DEFAULT_PORTS.pop("coded", None)
    with pytest.raises(ConfigError, match="unknown runtime 'coded'"):
        get_runtime("coded")
