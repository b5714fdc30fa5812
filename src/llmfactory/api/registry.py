"""Which :class:`~llmfactory.base_llm.BaseLLM` class talks to which runtime or cloud service.

Two registries of :class:`ServiceSpec`, looked up, never branched over:

* by **runtime** (``ollama``, ``lmstudio``, ``openai_compatible``) for models a
  runtime serves at a host: the base URL comes from the host;
* by cloud **service** (``openai``, ``anthropic``, ``gemini``, ``mistral``,
  ``deepseek``, ``groq``) for API models: the spec names the default base URL
  and the environment variables holding the key and a base URL override.

A plugin adds a runtime or a service with :func:`register_runtime_spec` /
:func:`register_service_spec`; classes may be given as ``"module:Class"`` strings so
that nothing is imported until a model of that kind is used.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmfactory.errors import ConfigError

if TYPE_CHECKING:
    from llmfactory.base_llm import BaseLLM
    from llmfactory.registry.models import LLMModel

__all__ = [
    "PROVIDER_SERVICES",
    "ServiceSpec",
    "llm_class_for",
    "register_runtime_spec",
    "register_service_spec",
    "runtime_spec",
    "service_spec",
    "spec_for_model",
]

_OPENAI = "llmfactory.api.openai:OpenAILLM"
_ANTHROPIC = "llmfactory.api.anthropic:AnthropicLLM"
_OLLAMA = "llmfactory.api.ollama:OllamaLLM"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSpec:
    """How to reach one runtime or cloud service.

    ``llm_class`` is the BaseLLM subclass speaking its wire protocol (or a
    ``"module:Class"`` path). ``base_url`` is the default base URL of a cloud
    service (None for a runtime: its host gives it, plus ``api_path``, e.g.
    ``/v1``). ``key_env`` / ``base_url_env`` are the environment variables read
    for the API key and a base URL override; ``key_required`` makes a missing
    key an error at the first send.
    """

    name: str
    llm_class: str | type[BaseLLM]
    base_url: str | None = None
    api_path: str = ""
    key_env: str | None = None
    base_url_env: str | None = None
    key_required: bool = False


_lock = threading.Lock()

_RUNTIMES: dict[str, ServiceSpec] = {
    "ollama": ServiceSpec(name="ollama", llm_class=_OLLAMA),
    "lmstudio": ServiceSpec(
        name="lmstudio", llm_class=_OPENAI, api_path="/v1", key_env="LMSTUDIO_API_TOKEN"
    ),
    # The same variable discovery sends (runtimes/openai_compatible.py), e.g. for vLLM's
    # or llama-server's --api-key.
    "openai_compatible": ServiceSpec(
        name="openai_compatible",
        llm_class=_OPENAI,
        api_path="/v1",
        key_env="OPENAI_COMPATIBLE_API_KEY",
    ),
    # Scripted test models (llmfactory.mock): no network, no key.
    "mock": ServiceSpec(name="mock", llm_class="llmfactory.api.mock:MockLLM"),
}

_SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(
            name="openai",
            llm_class=_OPENAI,
            base_url="https://api.openai.com/v1",
            key_env="OPENAI_API_KEY",
            base_url_env="OPENAI_BASE_URL",
            key_required=True,
        ),
        ServiceSpec(
            name="anthropic",
            llm_class=_ANTHROPIC,
            base_url="https://api.anthropic.com",
            key_env="ANTHROPIC_API_KEY",
            base_url_env="ANTHROPIC_BASE_URL",
            key_required=True,
        ),
        ServiceSpec(
            name="gemini",
            llm_class=_OPENAI,
            base_url="https://generativelanguage.googleapis.com/v1beta/openai",
            key_env="GEMINI_API_KEY",
            base_url_env="GEMINI_BASE_URL",
            key_required=True,
        ),
        ServiceSpec(
            name="mistral",
            llm_class=_OPENAI,
            base_url="https://api.mistral.ai/v1",
            key_env="MISTRAL_API_KEY",
            base_url_env="MISTRAL_BASE_URL",
            key_required=True,
        ),
        ServiceSpec(
            name="deepseek",
            llm_class=_OPENAI,
            base_url="https://api.deepseek.com/v1",
            key_env="DEEPSEEK_API_KEY",
            base_url_env="DEEPSEEK_BASE_URL",
            key_required=True,
        ),
        ServiceSpec(
            name="groq",
            llm_class=_OPENAI,
            base_url="https://api.groq.com/openai/v1",
            key_env="GROQ_API_KEY",
            base_url_env="GROQ_BASE_URL",
            key_required=True,
        ),
    )
}

#: The service that serves a cloud model whose record names none, by provider.
PROVIDER_SERVICES: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gemini",
    "mistral": "mistral",
    "deepseek": "deepseek",
}


def register_runtime_spec(spec: ServiceSpec) -> None:
    """Add (or replace) how to talk to models served by the runtime ``spec.name``."""
    with _lock:
        _RUNTIMES[spec.name] = spec


def register_service_spec(spec: ServiceSpec) -> None:
    """Add (or replace) a cloud service; models name it in their ``service`` field."""
    with _lock:
        _SERVICES[spec.name] = spec


def runtime_spec(runtime: str) -> ServiceSpec:
    """The spec of a runtime.

    Raises:
        ConfigError: no class is registered for it.
    """
    spec = _RUNTIMES.get(runtime)
    if spec is None:
        raise ConfigError(
            f"llmfactory does not know how to talk to models served by the runtime {runtime!r}; "
            f"known runtimes: {', '.join(sorted(_RUNTIMES))} (a plugin adds one with "
            "llmfactory.api.registry.register_runtime_spec)"
        )
    return spec


def service_spec(service: str) -> ServiceSpec:
    """The spec of a cloud service.

    Raises:
        ConfigError: the service is unknown.
    """
    spec = _SERVICES.get(service)
    if spec is None:
        raise ConfigError(
            f"unknown cloud service {service!r}; known services: {', '.join(sorted(_SERVICES))} "
            "(a plugin adds one with llmfactory.api.registry.register_service_spec)"
        )
    return spec


def spec_for_model(model: LLMModel) -> ServiceSpec:
    """The spec for a model: by runtime for a served model, by service for a cloud model.

    Raises:
        ConfigError: the runtime or service is unknown, or a cloud model names
            no service and its provider has no default one.
    """
    if model.host is not None or model.runtime != "api":
        return runtime_spec(model.runtime)
    service = model.service or PROVIDER_SERVICES.get(model.provider)
    if service is None:
        raise ConfigError(
            f"the cloud model {model.identifier!r} names no service and its provider "
            f"{model.provider!r} has no default one; register it with one, e.g. "
            f"register_model({model.identifier!r}, service='openai')"
        )
    return service_spec(service)


def llm_class_for(spec: ServiceSpec) -> type[BaseLLM]:
    """The BaseLLM subclass of a spec, importing it on first use."""
    cls = spec.llm_class
    if isinstance(cls, str):
        module_name, _, attr = cls.partition(":")
        try:
            loaded: type[BaseLLM] = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"cannot load the class {cls!r} registered for {spec.name!r}: {exc}"
            ) from exc
        return loaded
    return cls
