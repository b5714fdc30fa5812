"""Any OpenAI-compatible server: ``GET /v1/models`` (llama.cpp's server, vLLM, …).

What the listing says beyond ids depends on the server:

* **vLLM** (``owned_by: "vllm"``): ``max_model_len`` is the context length;
  ``GET /version`` gives the version.
* **llama.cpp's llama-server** (``owned_by: "llamacpp"``, a ``meta`` object):
  ``GET /props`` gives the context window the server was started with
  (``default_generation_settings.n_ctx``, or ``n_ctx``) and ``build_info``;
  ``meta.n_ctx_train`` is the trained maximum, used when ``/props`` says nothing.
* **llama-cpp-python's server** and others: ids only; the context length
  stays unknown (set it with ``llmfactory register ID --context-length N``).

A host given as ``http://host:port/v1`` is probed at ``http://host:port``
(hosts are stored without the ``/v1`` suffix). Models whose id says
``embed`` are registered as embedding models, the others as chat models.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmfactory.errors import LLMFactoryError
from llmfactory.runtimes.base import Host, ProbeResult, discovered_model

if TYPE_CHECKING:
    from llmfactory.registry.models import LLMModel
    from llmfactory.runtimes.http import ProbeClient

__all__ = ["OpenAICompatibleRuntime", "llamacpp_context_length"]

def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def llamacpp_context_length(props: Any) -> int | None:
    """The context window from llama-server's ``/props``, or None when it does not say."""
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    if isinstance(settings, dict) and _int(settings.get("n_ctx")):
        return _int(settings.get("n_ctx"))
    return _int(props.get("n_ctx"))


class OpenAICompatibleRuntime:
    """Any server with an OpenAI-compatible ``/v1/models`` (default port 8000)."""

    name = "openai_compatible"
    default_port = 8000
    env_var: str | None = None
    service_type: str | None = None

    async def probe(self, client: ProbeClient, host: Host) -> ProbeResult:
        """List ``/v1/models``; ask llama.cpp's ``/props`` or vLLM's ``/version`` for more."""
        token = client.env.get("OPENAI_COMPATIBLE_API_KEY")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = await client.get_json("/v1/models", headers=headers)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise client.malformed("/v1/models", "expected {'object': 'list', 'data': [...]}")
        items = [i for i in body["data"] if isinstance(i, dict) and _str(i.get("id"))]
        owners = {_str(i.get("owned_by")) for i in items}
        flavor = None
        version = None
        props: Any = None
        if "llamacpp" in owners or any(isinstance(i.get("meta"), dict) for i in items):
            flavor = "llamacpp"
            props = await self._optional(client, "/props", headers)
            if isinstance(props, dict):
                build = props.get("build_info")
                version = _str(build) if not isinstance(build, dict) else None
        elif "vllm" in owners:
            flavor = "vllm"
            answer = await self._optional(client, "/version", headers)
            if isinstance(answer, dict):
                version = _str(answer.get("version"))
        now = datetime.now(timezone.utc)
        context_from_props = llamacpp_context_length(props)
        models: dict[str, LLMModel] = {}
        for item in items:
            name = str(item["id"])
            meta = item.get("meta")
            n_ctx_train = _int(meta.get("n_ctx_train")) if isinstance(meta, dict) else None
            context = (
                _int(item.get("max_model_len"))
                or (context_from_props if len(items) == 1 else None)
                or n_ctx_train
            )
            caps = (
                ["embedding"]
                if "embed" in name.lower()
                else ["chat", "completion", "streaming"]
            )
            models.setdefault(
                name,
                discovered_model(
                    host,
                    name,
                    now=now,
                    capabilities=caps,
                    context_length=context,
                    extras={
                        "owned_by": _str(item.get("owned_by")),
                        "server": flavor,
                        "n_ctx_train": n_ctx_train,
                        "root": _str(item.get("root")),
                    },
                ),
            )
        return ProbeResult(runtime=self.name, version=version, models=tuple(models.values()),
                           api="v1")

    async def _optional(self, client: ProbeClient, path: str, headers: dict[str, str]) -> Any:
        try:
            return await client.get_optional_json(path, headers=headers)
        except LLMFactoryError:
            return None
