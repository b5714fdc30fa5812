"""LM Studio: its native model listing, with the OpenAI-compatible one as a fallback.

The probe asks, in order:

1. ``GET /api/v1/models`` (LM Studio 0.4 and newer): ``{"models": [{"key", "type":
   "llm"|"embedding", "max_context_length", "loaded_instances", "quantization":
   {"name"}, "architecture", "publisher", "capabilities": {…}, …}]}``;
2. ``GET /api/v0/models`` (0.3.6 and newer): ``{"data": [{"id", "type":
   "llm"|"vlm"|"embeddings", "state", "max_context_length", "quantization",
   "arch", "publisher", …}]}``;
3. ``GET /v1/models``: ids only.

LM Studio answers unknown routes with HTTP 200 and ``{"error": "Unexpected
endpoint or method. (…)"}``, which counts as "absent" here, as do 404 and 405.
Downloaded models that are not loaded are registered too (LM Studio loads a
model on demand), with ``extras["state"]`` saying which. When API tokens are
enabled in LM Studio, set ``LMSTUDIO_API_TOKEN``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmfactory.registry.models import infer_provider
from llmfactory.runtimes.base import Host, ProbeResult, discovered_model

if TYPE_CHECKING:
    from llmfactory.registry.models import LLMModel
    from llmfactory.runtimes.http import ProbeClient

__all__ = ["LMStudioRuntime"]

_TOKEN_VARS = ("LMSTUDIO_API_TOKEN", "LM_API_TOKEN")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _provider(name: str, publisher: str | None) -> str:
    provider = infer_provider(name)
    if provider == "unknown" and publisher:
        provider = infer_provider(f"{publisher}/{name}")
        if provider == "unknown":
            provider = infer_provider(publisher)
    return provider


_LLM = ["chat", "completion", "json_output", "streaming"]


class LMStudioRuntime:
    """The LM Studio runtime (default port 1234, ``LMSTUDIO_HOST``)."""

    name = "lmstudio"
    default_port = 1234
    env_var: str | None = "LMSTUDIO_HOST"
    service_type: str | None = "_lmstudio._tcp.local."

    def _headers(self, client: ProbeClient) -> dict[str, str]:
        for var in _TOKEN_VARS:
            token = client.env.get(var)
            if token:
                return {"Authorization": f"Bearer {token}"}
        return {}

    async def probe(self, client: ProbeClient, host: Host) -> ProbeResult:
        """List models through the richest API the server has."""
        headers = self._headers(client)
        now = datetime.now(timezone.utc)
        body = await client.get_optional_json("/api/v1/models", headers=headers)
        if isinstance(body, dict) and isinstance(body.get("models"), list):
            models = [self._v1(host, m, now) for m in body["models"] if isinstance(m, dict)]
            return self._result(models, "api/v1")
        body = await client.get_optional_json("/api/v0/models", headers=headers)
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            return self._result(self._v0_all(host, body["data"], now), "api/v0")
        body = await client.get_json("/v1/models", headers=headers)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise client.malformed("/v1/models", "expected {'data': [...]}")
        models = []
        for item in body["data"]:
            name = _str(item.get("id")) if isinstance(item, dict) else None
            if name is not None:
                caps = ["embedding"] if "embed" in name.lower() else _LLM
                models.append(discovered_model(host, name, now=now, capabilities=caps,
                                               extras={"owned_by": _str(item.get("owned_by"))}))
        return self._result(models, "v1")

    def _result(self, models: list[LLMModel | None], api: str) -> ProbeResult:
        unique: dict[str, LLMModel] = {}
        for model in models:
            if model is not None:
                unique.setdefault(model.identifier, model)
        return ProbeResult(runtime=self.name, models=tuple(unique.values()), api=api)

    def _v1(self, host: Host, item: dict[str, Any], now: datetime) -> LLMModel | None:
        name = _str(item.get("key")) or _str(item.get("id"))
        if name is None:
            return None
        kind = _str(item.get("type")) or "llm"
        caps_raw = item.get("capabilities")
        caps_info = caps_raw if isinstance(caps_raw, dict) else {}
        if kind.startswith("embedding"):
            caps = ["embedding"]
        else:
            caps = list(_LLM)
            if caps_info.get("vision") is True or kind == "vlm":
                caps.append("vision")
            if caps_info.get("trained_for_tool_use") is True:
                caps.append("tools")
            if caps_info.get("reasoning"):
                caps.append("reasoning")
        instances = item.get("loaded_instances")
        instances = instances if isinstance(instances, list) else []
        loaded_context = None
        for instance in instances:
            config = instance.get("config") if isinstance(instance, dict) else None
            if isinstance(config, dict) and _int(config.get("context_length")):
                loaded_context = _int(config.get("context_length"))
                break
        quant = item.get("quantization")
        quantization = _str(quant.get("name")) if isinstance(quant, dict) else _str(quant)
        arch = _str(item.get("architecture"))
        publisher = _str(item.get("publisher"))
        return discovered_model(
            host,
            name,
            now=now,
            provider=_provider(name, publisher),
            capabilities=caps,
            context_length=_int(item.get("max_context_length")),
            family=arch,
            parameter_size=_str(item.get("params_string")),
            quantization=quantization,
            size_bytes=_int(item.get("size_bytes")),
            extras={
                "type": kind,
                "state": "loaded" if instances else "not-loaded",
                "loaded": bool(instances),
                "loaded_context_length": loaded_context,
                "arch": arch,
                "publisher": publisher,
                "format": _str(item.get("format")),
                "display_name": _str(item.get("display_name")),
            },
        )

    def _v0_all(self, host: Host, data: list[Any], now: datetime) -> list[LLMModel | None]:
        # The same id may be listed twice (loaded and not loaded): the loaded one wins.
        by_id: dict[str, dict[str, Any]] = {}
        for item in data:
            if not isinstance(item, dict) or _str(item.get("id")) is None:
                continue
            previous = by_id.get(item["id"])
            if previous is None or item.get("state") == "loaded":
                by_id[item["id"]] = item
        return [self._v0(host, item, now) for item in by_id.values()]

    def _v0(self, host: Host, item: dict[str, Any], now: datetime) -> LLMModel:
        name = str(item["id"])
        kind = _str(item.get("type")) or "llm"
        if kind.startswith("embedding"):
            caps = ["embedding"]
        else:
            caps = list(_LLM)
            if kind == "vlm":
                caps.append("vision")
            listed = item.get("capabilities")
            if isinstance(listed, list) and "tool_use" in listed:
                caps.append("tools")
        state = _str(item.get("state"))
        arch = _str(item.get("arch"))
        publisher = _str(item.get("publisher"))
        return discovered_model(
            host,
            name,
            now=now,
            provider=_provider(name, publisher),
            capabilities=caps,
            context_length=_int(item.get("max_context_length")),
            family=arch,
            quantization=_str(item.get("quantization")),
            extras={
                "type": kind,
                "state": state,
                "loaded": state == "loaded",
                "loaded_context_length": _int(item.get("loaded_context_length")),
                "arch": arch,
                "publisher": publisher,
                "format": _str(item.get("compatibility_type")),
            },
        )
