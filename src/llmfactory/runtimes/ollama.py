"""Ollama: ``GET /api/version``, ``GET /api/tags``, ``POST /api/show``.

The probe identifies the server by ``/api/version``, lists models with
``/api/tags`` and describes each with ``/api/show`` (context length from
``model_info["<general.architecture>.context_length"]``, capabilities from
``capabilities``), a few at a time. A model whose digest has not changed
since the registry last described it is not asked again: its description is
taken from the registry; nor is one whose listing already carries
``capabilities`` and ``details.context_length`` (newer servers). Models that
could not be described (an error, or the deadline was near) are registered
from the listing alone and described at the next discovery.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anyio

from llmfactory.errors import LLMFactoryError
from llmfactory.runtimes.base import Host, ProbeResult, discovered_model

if TYPE_CHECKING:
    from llmfactory.registry.models import LLMModel
    from llmfactory.runtimes.http import ProbeClient

__all__ = ["OllamaRuntime", "ollama_capabilities"]

_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)
# Extras that come from /api/show (copied from the registry on a digest-cache hit).
_SHOW_EXTRAS = ("num_ctx", "architecture", "parameter_count", "embedding_length")
_UNDESCRIBED = "not described before the discovery deadline"
_EMBEDDING_FAMILIES = frozenset({"bert", "nomic-bert", "xlm-roberta", "jina-bert", "gte"})


def ollama_capabilities(caps: Any, *, name: str = "", family: str | None = None) -> list[str]:
    """Map Ollama's capability strings to llmfactory's.

    ``completion`` gives chat, streaming, completion and JSON output (Ollama's
    ``format``); ``tools``, ``vision`` and ``embedding`` map one to one and
    ``thinking`` is reasoning. Without a ``capabilities`` list (older servers)
    the model is guessed to be a chat model unless its name or family says
    embedding.
    """
    if not isinstance(caps, list):
        lowered = name.lower()
        if "embed" in lowered or (family or "").lower() in _EMBEDDING_FAMILIES:
            return ["embedding"]
        return ["chat", "completion", "json_output", "streaming"]
    result: set[str] = set()
    for cap in caps:
        if cap == "completion":
            result |= {"chat", "streaming", "completion", "json_output"}
        elif cap in ("tools", "vision", "embedding"):
            result.add(cap)
        elif cap == "thinking":
            result.add("reasoning")
    return sorted(result)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class _Entry:
    """One model of ``/api/tags``, with what ``/api/show`` adds."""

    __slots__ = ("capabilities", "context_length", "entry", "error", "extras", "name", "show")

    def __init__(self, name: str, entry: dict[str, Any]) -> None:
        self.name = name
        self.entry = entry
        self.show: dict[str, Any] | None = None
        self.error: str | None = None
        self.context_length: int | None = None
        self.capabilities: list[str] | None = None
        self.extras: dict[str, Any] = {}


class OllamaRuntime:
    """The Ollama runtime (default port 11434, ``OLLAMA_HOST``)."""

    name = "ollama"
    default_port = 11434
    env_var: str | None = "OLLAMA_HOST"
    service_type: str | None = "_ollama._tcp.local."

    async def probe(self, client: ProbeClient, host: Host) -> ProbeResult:
        """Identify the server, list its models and describe the ones not cached."""
        version_body = await client.get_json("/api/version")
        if not isinstance(version_body, dict) or not isinstance(version_body.get("version"), str):
            raise client.malformed("/api/version", "no string 'version' in the answer")
        version = str(version_body["version"])
        tags = await client.get_json("/api/tags")
        if not isinstance(tags, dict) or not isinstance(tags.get("models", []), (list, type(None))):
            raise client.malformed("/api/tags", "expected {'models': [...]}")
        entries: list[_Entry] = []
        seen: set[str] = set()
        for item in tags.get("models") or []:
            if not isinstance(item, dict):
                continue
            name = _str(item.get("name")) or _str(item.get("model"))
            if name is None or name in seen:
                continue
            seen.add(name)
            entries.append(_Entry(name, item))
        now = datetime.now(timezone.utc)
        pending = [
            e for e in entries
            if not self._from_listing(e) and not self._from_cache(client, host, e)
        ]
        warnings: list[str] = []
        if pending:
            # What to record should the deadline cut the describing short.
            todo = {id(e) for e in pending}
            client.offer(ProbeResult(
                runtime=self.name, version=version,
                models=tuple(self._model(host, e, now, _UNDESCRIBED if id(e) in todo else None)
                             for e in entries),
                warnings=(f"{len(pending)} model(s) not described: the deadline came first",),
            ))
            await self._describe_all(client, pending)
            failed = [e for e in pending if e.error is not None]
            if failed:
                warnings.append(
                    f"{len(failed)} model(s) not described ({failed[0].name}: {failed[0].error})"
                )
        models = tuple(self._model(host, e, now) for e in entries)
        return ProbeResult(runtime=self.name, version=version, models=models,
                           warnings=tuple(warnings))

    # -- describing -------------------------------------------------------------

    def _from_listing(self, entry: _Entry) -> bool:
        """Newer servers list capabilities and the context length in ``/api/tags``."""
        caps = entry.entry.get("capabilities")
        details = entry.entry.get("details")
        context = _int(details.get("context_length")) if isinstance(details, dict) else None
        if not isinstance(caps, list) or context is None:
            return False
        family = _str(details.get("family")) if isinstance(details, dict) else None
        entry.capabilities = ollama_capabilities(caps, name=entry.name, family=family)
        entry.context_length = context
        return True

    def _from_cache(self, client: ProbeClient, host: Host, entry: _Entry) -> bool:
        digest = _str(entry.entry.get("digest"))
        if digest is None:
            return False
        known = client.known_model(f"{entry.name}:{self.name}@{host.address}")
        if known is None or known.digest != digest or "describe_error" in known.extras:
            return False
        entry.context_length = known.context_length
        entry.capabilities = list(known.capabilities)
        entry.extras = {k: known.extras[k] for k in _SHOW_EXTRAS if k in known.extras}
        return True

    async def _describe_all(self, client: ProbeClient, pending: list[_Entry]) -> None:
        # Stop describing a little before the host's deadline, so that what was
        # listed is still returned (and described at the next discovery). The
        # margin leaves time to cancel what is in flight when many hosts stop at once.
        margin = max(0.3, 0.15 * max(client.time_left(), 0.0))
        with anyio.move_on_at(client.deadline - margin):
            async with anyio.create_task_group() as tg:
                for entry in pending:
                    tg.start_soon(self._describe, client, entry)
        for entry in pending:
            if entry.show is None and entry.error is None:
                entry.error = _UNDESCRIBED

    async def _describe(self, client: ProbeClient, entry: _Entry) -> None:
        async with client.describe_limiter:
            try:
                body = await client.post_json("/api/show", {"model": entry.name})
            except LLMFactoryError as exc:
                entry.error = str(exc)
                return
        if not isinstance(body, dict):
            entry.error = "/api/show did not answer with a JSON object"
            return
        entry.show = body
        info = body.get("model_info")
        info = info if isinstance(info, dict) else {}
        arch = _str(info.get("general.architecture"))
        context = _int(info.get(f"{arch}.context_length")) if arch else None
        if context is None:
            context = next(
                (_int(v) for k, v in info.items() if k.endswith(".context_length") and _int(v)),
                None,
            )
        entry.context_length = context
        entry.extras["architecture"] = arch
        entry.extras["parameter_count"] = _int(info.get("general.parameter_count"))
        if arch:
            entry.extras["embedding_length"] = _int(info.get(f"{arch}.embedding_length"))
        parameters = body.get("parameters")
        if isinstance(parameters, str):
            match = _NUM_CTX.search(parameters)
            if match:
                entry.extras["num_ctx"] = int(match.group(1))
        if "capabilities" in body:
            details = body.get("details")
            family = _str(details.get("family")) if isinstance(details, dict) else None
            entry.capabilities = ollama_capabilities(
                body.get("capabilities"), name=entry.name, family=family
            )

    # -- building records -------------------------------------------------------

    def _model(
        self, host: Host, e: _Entry, now: datetime, error: str | None = None
    ) -> LLMModel:
        item = e.entry
        raw_details = item.get("details")
        details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
        if e.show is not None and isinstance(e.show.get("details"), dict):
            details = {**details, **{k: v for k, v in e.show["details"].items() if v}}
        family = _str(details.get("family"))
        capabilities = e.capabilities
        if capabilities is None:
            capabilities = ollama_capabilities(item.get("capabilities"), name=e.name,
                                               family=family)
        context = e.context_length or _int(details.get("context_length"))
        extras: dict[str, Any] = dict(e.extras)
        extras["modified_at"] = _str(item.get("modified_at"))
        extras["format"] = _str(details.get("format"))
        for key in ("remote_model", "remote_host"):
            extras[key] = _str(item.get(key))
        if (error or e.error) is not None:
            extras["describe_error"] = error or e.error
        return discovered_model(
            host,
            e.name,
            now=now,
            capabilities=capabilities,
            extras=extras,
            context_length=context,
            family=family,
            parameter_size=_str(details.get("parameter_size")),
            quantization=_str(details.get("quantization_level")),
            size_bytes=_int(item.get("size")),
            digest=_str(item.get("digest")),
        )
