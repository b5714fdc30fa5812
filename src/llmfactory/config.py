"""Settings from the environment and the config file, and per-model call configuration.

Where things live (``llmfactory paths`` prints them):

* the registry: ``<user data dir>/registry.db`` (``LLMFACTORY_DATABASE_URL``
  overrides the URL);
* the config file: ``<user config dir>/config.toml`` (``LLMFACTORY_CONFIG``
  overrides the path);
* ``LLMFACTORY_HOME`` puts both in one directory.

The config file is TOML::

    [discovery]
    enabled = true          # probe runtimes at start-up
    mdns = false            # also browse the LAN with zeroconf
    connect_timeout = 0.5   # seconds per host
    deadline = 3.0          # seconds for the whole probe

    [[hosts]]
    runtime = "ollama"
    url = "http://gpu-box:11434"

    [pricing."gpt-4o"]      # USD per million tokens
    input = 2.5
    output = 10.0

    [api_keys]
    openai = "sk-..."

    [defaults]              # LLMConfig defaults for every model
    temperature = 0.2
"""

from __future__ import annotations

import logging
import math
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from llmfactory.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "DiscoverySettings",
    "HostSetting",
    "LLMConfig",
    "PriceOverride",
    "Settings",
    "default_paths",
]

logger = logging.getLogger("llmfactory.config")

APP_NAME = "llmfactory"


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceOverride:
    """Prices from the config file, USD per million tokens; None keeps the model's own."""

    input: float | None = None
    output: float | None = None
    cached_input: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSetting:
    """A host named in the config file or ``LLMFACTORY_HOSTS``."""

    runtime: str
    url: str
    source: str = "config"


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoverySettings:
    """How start-up discovery behaves."""

    enabled: bool = True
    mdns: bool = False
    connect_timeout: float = 0.5
    deadline: float = 3.0
    mdns_timeout: float = 2.0
    defaults: bool = True  # probe the runtimes' default localhost ports


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMConfig:
    """How to call a model. Fields left None fall back to the next layer.

    Layers, lowest first: catalogue defaults < config file ``[defaults]`` <
    factory config < the ``config`` given to ``create_llm`` < per-call overrides.

    ``prompt_caching`` asks for explicit prompt caching where the protocol
    needs it marked (Anthropic ``cache_control`` on the system prompt and the
    conversation's stable prefix); OpenAI-compatible servers cache on their own.
    """

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    system_message: str | None = None
    timeout: float | None = None
    connect_timeout: float | None = None
    retries: int | None = None
    pricing: PriceOverride | None = None
    options: Mapping[str, Any] | None = None
    prompt_caching: bool | None = None
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None

    def merged(self, other: LLMConfig | None) -> LLMConfig:
        """This config with every non-None field of ``other`` laid on top."""
        if other is None:
            return self
        changes: dict[str, Any] = {}
        for f in fields(other):
            value = getattr(other, f.name)
            if value is None:
                continue
            if f.name == "options" and self.options:
                value = {**self.options, **value}
            changes[f.name] = value
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "config") -> LLMConfig:
        """Build from a mapping (e.g. the config file's ``[defaults]`` table)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values = {
            key: value if value is None else _config_value(key, value, f"{where}: {key}")
            for key, value in data.items()
        }
        return cls(**values)


def default_paths(env: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """The ``(data_dir, config_dir)`` llmfactory uses."""
    env = os.environ if env is None else env
    home = env.get("LLMFACTORY_HOME")
    if home:
        path = Path(home).expanduser()
        return path, path
    import platformdirs

    return (
        Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
    )


def _expect(
    value: Any, kind: type | tuple[type, ...], where: str, *, secret: bool = False
) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        # A secret (an API key written as a list, say) is described, never shown.
        shown = f"a {type(value).__name__}" if secret else repr(value)
        raise ConfigError(f"{where} must be a {names}, not {shown}")
    return value


def _number(value: Any, where: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite number >= ``minimum`` (> with ``strict``), as a float."""
    number = _expect(value, (int, float), where)
    if not math.isfinite(number) or number < minimum or (strict and number == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ConfigError(f"{where} must be {bound} (a finite number), not {number!r}")
    return float(number)


_FLOAT_FIELDS = frozenset({"temperature", "top_p", "timeout", "connect_timeout"})
_INT_FIELDS = frozenset({"max_tokens", "top_k", "seed", "retries"})
_STR_FIELDS = frozenset({"system_message", "base_url"})
_PRICE_KEYS = ("input", "output", "cached_input")


def _config_value(key: str, value: Any, where: str) -> Any:
    """Check (and normalise) one :class:`LLMConfig` value read from a mapping."""
    if key in _FLOAT_FIELDS:
        return _number(value, where, strict=key in ("timeout", "connect_timeout"))
    if key in _INT_FIELDS:
        number = _expect(value, int, where)
        if key == "retries" and number < 0:
            raise ConfigError(f"{where} must be >= 0, not {number}")
        return number
    if key in _STR_FIELDS:
        return _expect(value, str, where)
    if key == "api_key":
        return _expect(value, str, where, secret=True)
    if key == "stop":
        if isinstance(value, str):
            return (value,)
        stops = _expect(value, (list, tuple), where)
        return tuple(_expect(item, str, f"{where} entry") for item in stops)
    if key == "options":
        return dict(_expect(value, Mapping, where))
    if key == "pricing":
        if isinstance(value, PriceOverride):
            return value
        table = _expect(value, Mapping, where)
        bad = sorted(set(table) - set(_PRICE_KEYS))
        if bad:
            raise ConfigError(f"{where} has unknown key(s) {', '.join(map(str, bad))}; use "
                              "input, output and cached_input (USD per million tokens)")
        return PriceOverride(**{k: _number(v, f"{where}.{k}") for k, v in table.items()})
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything llmfactory reads from the environment and the config file."""

    data_dir: Path
    config_dir: Path
    config_file: Path
    database_url: str
    database_url_from_env: bool = False
    discovery: DiscoverySettings = DiscoverySettings()
    hosts: tuple[HostSetting, ...] = ()
    pricing: Mapping[str, PriceOverride] = field(default_factory=dict)
    api_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    base_urls: Mapping[str, str] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()
    defaults: LLMConfig = LLMConfig()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def database_path(self) -> Path | None:
        """The registry file, or None when the URL is not a SQLite file."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and self.database_url != "sqlite://":
            rest = self.database_url[len(prefix) :]
            return Path(rest) if rest and rest != ":memory:" else None
        return None

    @classmethod
    def load(
        cls, env: Mapping[str, str] | None = None, *, config_file: Path | None = None
    ) -> Settings:
        """Read the environment and the config file (a missing file is fine)."""
        env = dict(os.environ if env is None else env)
        data_dir, config_dir = default_paths(env)
        if config_file is None:
            config_file = Path(env.get("LLMFACTORY_CONFIG") or config_dir / "config.toml")
        url_env = env.get("LLMFACTORY_DATABASE_URL")
        database_url = url_env or f"sqlite:///{data_dir / 'registry.db'}"
        raw = read_config_file(config_file)
        return cls._from_raw(
            raw,
            where=str(config_file),
            data_dir=data_dir,
            config_dir=config_dir,
            config_file=config_file,
            database_url=database_url,
            database_url_from_env=bool(url_env),
            env=env,
        )

    @classmethod
    def _from_raw(cls, raw: Mapping[str, Any], *, where: str, **base: Any) -> Settings:
        known = {"discovery", "hosts", "pricing", "api_keys", "base_urls", "extensions",
                 "defaults"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown section(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        discovery = DiscoverySettings()
        if "discovery" in raw:
            table = _expect(raw["discovery"], dict, f"{where}: [discovery]")
            allowed = {f.name for f in fields(DiscoverySettings)}
            bad = sorted(set(table) - allowed)
            if bad:
                raise ConfigError(
                    f"{where}: unknown [discovery] key(s) {', '.join(bad)}; known: "
                    + ", ".join(sorted(allowed))
                )
            values: dict[str, Any] = {}
            for key, value in table.items():
                if key in ("enabled", "mdns", "defaults"):
                    values[key] = _expect(value, bool, f"{where}: discovery.{key}")
                else:
                    values[key] = _number(value, f"{where}: discovery.{key}", strict=True)
            discovery = DiscoverySettings(**values)
        hosts: list[HostSetting] = []
        for i, entry in enumerate(_expect(raw.get("hosts", []), list, f"{where}: [[hosts]]")):
            entry = _expect(entry, dict, f"{where}: hosts[{i}]")
            if set(entry) - {"runtime", "url"} or "runtime" not in entry or "url" not in entry:
                raise ConfigError(
                    f"{where}: hosts[{i}] must have exactly the keys runtime and url, e.g. "
                    '[[hosts]] runtime = "ollama" url = "http://gpu-box:11434"'
                )
            hosts.append(
                HostSetting(
                    runtime=str(_expect(entry["runtime"], str, f"{where}: hosts[{i}].runtime")),
                    url=str(_expect(entry["url"], str, f"{where}: hosts[{i}].url")),
                )
            )
        pricing: dict[str, PriceOverride] = {}
        for model, table in _expect(raw.get("pricing", {}), dict, f"{where}: [pricing]").items():
            table = _expect(table, dict, f'{where}: [pricing."{model}"]')
            bad = sorted(set(table) - {"input", "output", "cached_input"})
            if bad:
                raise ConfigError(
                    f'{where}: [pricing."{model}"] has unknown key(s) {", ".join(bad)}; '
                    "use input, output and cached_input (USD per million tokens)"
                )
            prices = {}
            for key, value in table.items():
                prices[key] = _number(value, f'{where}: pricing."{model}".{key}')
            pricing[str(model)] = PriceOverride(**prices)
        api_keys = {
            str(k): str(_expect(v, str, f"{where}: api_keys.{k}", secret=True))
            for k, v in _expect(raw.get("api_keys", {}), dict, f"{where}: [api_keys]",
                                secret=True).items()
        }
        base_urls = {
            str(k): str(_expect(v, str, f"{where}: base_urls.{k}"))
            for k, v in _expect(raw.get("base_urls", {}), dict, f"{where}: [base_urls]").items()
        }
        ext_raw = raw.get("extensions", {})
        ext_list = ext_raw.get("enabled", []) if isinstance(ext_raw, dict) else ext_raw
        extensions = tuple(
            str(_expect(e, str, f"{where}: extensions entry"))
            for e in _expect(ext_list, list, f"{where}: extensions.enabled")
        )
        defaults = LLMConfig.from_mapping(
            _expect(raw.get("defaults", {}), dict, f"{where}: [defaults]"),
            where=f"{where}: [defaults]",
        )
        return cls(
            discovery=discovery,
            hosts=tuple(hosts),
            pricing=pricing,
            api_keys=api_keys,
            base_urls=base_urls,
            extensions=extensions,
            defaults=defaults,
            **base,
        )


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse the TOML config file; a missing file is an empty config."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    try:
        parsed: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the config file {path} is not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"the config file {path} is not valid TOML: {exc}; fix it or move it aside"
        ) from exc
    if parsed.get("api_keys") and os.name == "posix":
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = 0
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            logger.warning(
                "the config file %s holds API keys and can be read by other users; "
                "run `chmod 600 %s`",
                path,
                path,
            )
    return parsed
