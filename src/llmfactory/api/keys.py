"""Where to send a model's requests and with which key.

For a cloud service, in order of precedence:

* the base URL: ``LLMConfig.base_url``, then the service's environment variable
  (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``, …), then ``[base_urls]`` in the
  config file, then the service's default;
* the API key: ``LLMConfig.api_key``, then the service's environment variable
  (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``GEMINI_API_KEY``,
  ``MISTRAL_API_KEY``, ``DEEPSEEK_API_KEY``, ``GROQ_API_KEY``), then
  ``[api_keys]`` in the config file.

For a runtime-served model the base URL is its host's (``http://host:port``
plus the runtime's API path); a key is optional (LM Studio with API tokens
on: ``LMSTUDIO_API_TOKEN`` or ``api_keys.lmstudio``).

Keys are never shown: :class:`Endpoint` leaves them out of its repr, and
errors name the variable to set, never a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmfactory.api.registry import ServiceSpec
from llmfactory.config import LLMConfig, Settings
from llmfactory.errors import ConfigError, MissingAPIKeyError

__all__ = ["Endpoint", "resolve_endpoint"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A resolved destination: base URL (no trailing slash), the service's name, and its key."""

    base_url: str
    service: str
    api_key: str | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        """The full URL of ``path`` (which starts with ``/``)."""
        return self.base_url + path


def _clean(url: str, where: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{where}: base URL {url!r} must start with http:// or https:// "
            "(e.g. https://api.openai.com/v1)"
        )
    return url


def resolve_endpoint(
    spec: ServiceSpec,
    *,
    config: LLMConfig,
    settings: Settings | None,
    host_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Endpoint:
    """Resolve the base URL and API key for a call (see the module docstring for the order).

    ``host_url`` is the runtime host's base URL (``http://host:port`` with any
    path prefix) for a runtime-served model; None for a cloud model.

    Raises:
        MissingAPIKeyError: the service needs a key and none is configured; the
            message names the environment variable to set.
        ConfigError: a configured base URL is not an http(s) URL.
    """
    environ = os.environ if env is None else env
    snapshot: Mapping[str, str] = settings.env if settings is not None else {}
    file_keys: Mapping[str, str] = settings.api_keys if settings is not None else {}
    file_urls: Mapping[str, str] = settings.base_urls if settings is not None else {}

    def from_env(name: str | None) -> str | None:
        if name is None:
            return None
        return environ.get(name) or snapshot.get(name) or None

    if config.base_url:
        base = _clean(config.base_url, "LLMConfig.base_url")
    elif (value := from_env(spec.base_url_env)) is not None:
        base = _clean(value, str(spec.base_url_env))
    elif spec.name in file_urls and host_url is None:
        base = _clean(file_urls[spec.name], f"config file base_urls.{spec.name}")
    elif host_url is not None:
        base = _clean(host_url, f"the {spec.name} host") + spec.api_path
    elif spec.base_url is not None:
        base = spec.base_url.rstrip("/")
    else:
        raise ConfigError(
            f"no base URL for {spec.name}: set base_url in the LLMConfig"
            + (f" or the environment variable {spec.base_url_env}" if spec.base_url_env else "")
        )
    key = config.api_key or from_env(spec.key_env) or file_keys.get(spec.name) or None
    if key is None and spec.key_required:
        raise MissingAPIKeyError(spec.name, spec.key_env or f"{spec.name.upper()}_API_KEY")
    return Endpoint(base, spec.name, key)
