"""The runtime plugin interface, and the registry of runtimes.

A *runtime* is a kind of server that serves models (Ollama, LM Studio, any
OpenAI-compatible server). Each is an object satisfying :class:`Runtime`: a
name, a default port, the env var users set to point at it, and an async
``probe(client, host)`` that asks one host for its version and its models.

Runtimes are found through the entry-point group ``llmfactory.runtimes``; the
built-ins are registered through the same mechanism (and, when the package
metadata is stale — a source checkout that was never installed — from the
same ``module:attribute`` strings kept here). A third-party package adds one
with, in its ``pyproject.toml``::

    [project.entry-points."llmfactory.runtimes"]
    myruntime = "my_package.runtime:MyRuntime"

The entry point may name a class (instantiated without arguments) or an
instance. :func:`register_runtime` does the same from code.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llmfactory.errors import ConfigError
from llmfactory.identifiers import DEFAULT_PORTS, HostAddress, register_default_port

if TYPE_CHECKING:
    from llmfactory.registry.models import LLMModel
    from llmfactory.runtimes.http import ProbeClient

__all__ = [
    "ENTRY_POINT_GROUP",
    "Host",
    "ProbeResult",
    "Runtime",
    "discovered_model",
    "get_runtime",
    "load_runtimes",
    "plugin_errors",
    "register_runtime",
    "runtime_names",
    "unregister_runtime",
]

logger = logging.getLogger("llmfactory.runtimes")

ENTRY_POINT_GROUP = "llmfactory.runtimes"
"""The entry-point group through which runtimes (built-in and third-party) register."""

# The built-ins, as their entry points name them (see pyproject.toml).
_BUILTINS: dict[str, str] = {
    "ollama": "llmfactory.runtimes.ollama:OllamaRuntime",
    "lmstudio": "llmfactory.runtimes.lmstudio:LMStudioRuntime",
    "openai_compatible": "llmfactory.runtimes.openai_compatible:OpenAICompatibleRuntime",
    "mock": "llmfactory.runtimes.mock:MockRuntime",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """One place a runtime listens: ``runtime`` at ``scheme://address/path``.

    ``source`` says who named it: ``default``, ``env``, ``config``, ``user``
    (added with ``add_host`` or ``llmfactory hosts add``), ``identifier`` (probed
    on demand for an identifier naming it), ``mdns`` (found on the LAN) or
    ``explicit`` (given to one ``refresh``).
    """

    runtime: str
    address: HostAddress
    scheme: str = "http"
    path: str = ""
    source: str = "user"

    @property
    def base_url(self) -> str:
        """The URL the runtime's API paths are appended to, e.g. ``http://127.0.0.1:11434``."""
        return self.address.url(self.scheme, self.path)

    @property
    def key(self) -> str:
        """``runtime@host:port``: what identifies the host in reports and the registry."""
        return f"{self.runtime}@{self.address}"

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """What one probe of one host found.

    ``version`` is the runtime's version when it reports one; ``models`` are
    complete :class:`~llmfactory.registry.models.LLMModel` records (build them
    with :func:`discovered_model`); ``api`` names the API that answered when a
    runtime has several (``api/v1``, ``api/v0``, ``v1``); ``warnings`` are
    problems that did not stop the probe (a model that could not be described).
    """

    runtime: str
    version: str | None = None
    models: tuple[LLMModel, ...] = ()
    api: str | None = None
    warnings: tuple[str, ...] = ()


@runtime_checkable
class Runtime(Protocol):
    """What a runtime plugin provides.

    ``name`` is the word used in identifiers (``model:name@host``); it must be
    a lower-case word. ``default_port`` is used when a host string has no port;
    ``env_var`` (or None) is the environment variable that points at the
    runtime, read by :mod:`llmfactory.runtimes.hosts` for the built-ins;
    ``service_type`` (or None) is the DNS-SD type browsed for it on the LAN.

    ``probe`` must raise an :class:`~llmfactory.errors.LLMFactoryError` when the
    host is not this runtime or answers wrongly (the client's methods already
    raise the right ones), and return a :class:`ProbeResult` otherwise.
    """

    name: str
    default_port: int
    env_var: str | None
    service_type: str | None

    async def probe(self, client: ProbeClient, host: Host) -> ProbeResult:
        """Ask ``host`` for the runtime's version and the models it serves."""
        ...


_NAME_RE = re.compile(r"^[a-z][a-z0-9_.\-]*$")  # as identifiers accept
_lock = threading.RLock()
_registry: dict[str, Runtime] = {}
_errors: list[str] = []
_loaded = False


def _load_object(value: str) -> Any:
    import importlib

    module_name, _, attr = value.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _instantiate(obj: Any, origin: str) -> Runtime:
    runtime = obj() if isinstance(obj, type) else obj
    missing = [a for a in ("name", "default_port", "probe") if not hasattr(runtime, a)]
    if missing:
        raise ConfigError(
            f"runtime plugin {origin} lacks {', '.join(missing)}; a runtime needs name, "
            "default_port, env_var, service_type and an async probe(client, host)"
        )
    for optional in ("env_var", "service_type"):
        if not hasattr(runtime, optional):
            with contextlib.suppress(AttributeError):  # slotted or frozen plugin objects
                setattr(runtime, optional, None)
    return runtime  # type: ignore[no-any-return]


def register_runtime(runtime: Runtime | type, *, replace: bool = False) -> Runtime:
    """Register a runtime (an object satisfying :class:`Runtime`, or a class to instantiate).

    Its default port is recorded for identifier parsing. A name already taken
    raises :class:`~llmfactory.errors.ConfigError` unless ``replace`` is true.
    """
    instance = _instantiate(runtime, repr(runtime))
    name = str(instance.name)
    if not _NAME_RE.match(name) or name == "api":
        raise ConfigError(
            f"runtime name {name!r} must be a lower-case word (letters, digits, '_', '-', '.') "
            "other than 'api'"
        )
    with _lock:
        if name in _registry and not replace and _registry[name] is not instance:
            raise ConfigError(
                f"a runtime named {name!r} is already registered "
                f"({type(_registry[name]).__qualname__}); pass replace=True to replace it"
            )
        _registry[name] = instance
    port = int(instance.default_port)
    if DEFAULT_PORTS.get(name) != port:
        register_default_port(name, port)
    return instance


def unregister_runtime(name: str) -> bool:
    """Forget a runtime (tests use this); True when it was registered."""
    with _lock:
        return _registry.pop(name, None) is not None


def _entry_points() -> list[tuple[str, str, Any]]:
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.append((ep.name, ep.value, ep))
    return found


def load_runtimes(*, reload: bool = False) -> dict[str, Runtime]:
    """Load every runtime (built-ins and entry points) once; return name → runtime.

    A plugin that fails to load is skipped with a warning (see
    :func:`plugin_errors`); it never breaks discovery of the others.
    """
    global _loaded
    with _lock:
        if _loaded and not reload:
            return dict(_registry)
        if reload:
            _errors.clear()
        sources: dict[str, tuple[str, Any]] = {}
        try:
            for name, value, ep in _entry_points():
                if name in sources and sources[name][0] != value:
                    _errors.append(
                        f"runtime {name!r} is declared twice ({sources[name][0]} and {value}); "
                        "the first is used"
                    )
                    continue
                sources.setdefault(name, (value, ep))
        except Exception as exc:  # broken metadata on sys.path must not stop discovery
            _errors.append(f"cannot read the {ENTRY_POINT_GROUP} entry points: {exc}")
        for name, value in _BUILTINS.items():
            declared = sources.get(name)
            if declared is not None and declared[0] != value:
                _errors.append(
                    f"a plugin declares runtime {name!r} ({declared[0]}), which is built in; "
                    "the built-in is used"
                )
            sources[name] = (value, None)
        for name, (value, ep) in sources.items():
            if name in _registry and not reload:
                continue
            try:
                obj = ep.load() if ep is not None else _load_object(value)
                runtime = _instantiate(obj, f"{name} = {value}")
                if runtime.name != name:
                    raise ConfigError(
                        f"the entry point is named {name!r} but the runtime calls itself "
                        f"{runtime.name!r}"
                    )
                register_runtime(runtime, replace=True)
            except Exception as exc:
                message = f"cannot load runtime plugin {name!r} ({value}): {exc}"
                logger.warning("%s", message)
                _errors.append(message)
        _loaded = True
        return dict(_registry)


def plugin_errors() -> list[str]:
    """Problems met while loading runtime plugins (each also logged as a warning)."""
    with _lock:
        return list(_errors)


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``; :class:`~llmfactory.errors.ConfigError` when unknown."""
    if not _loaded:
        load_runtimes()
    runtime = _registry.get(name)
    if runtime is None:
        raise ConfigError(
            f"unknown runtime {name!r}; known: {', '.join(runtime_names())} "
            f"(plugins add runtimes through the {ENTRY_POINT_GROUP!r} entry-point group)"
        )
    return runtime


def runtime_names() -> list[str]:
    """The names of every registered runtime, sorted."""
    return sorted(load_runtimes())


# -- building model records ---------------------------------------------------------

_DEFAULTS: dict[str, Any] | None = None


def _row_defaults() -> dict[str, Any]:
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = {
            "service": None,
            "context_length": None,
            "max_output_tokens": None,
            "capabilities": [],
            "input_price_per_million": 0.0,
            "output_price_per_million": 0.0,
            "cached_input_price_per_million": None,
            "family": None,
            "parameter_size": None,
            "quantization": None,
            "size_bytes": None,
            "digest": None,
            "extras": {},
            "source": "discovered",
            "available": True,
            "user_fields": [],
        }
    return _DEFAULTS


def discovered_model(
    host: Host,
    name: str,
    *,
    now: datetime,
    provider: str | None = None,
    capabilities: list[str] | tuple[str, ...] = (),
    extras: Mapping[str, Any] | None = None,
    **fields: Any,
) -> LLMModel:
    """A complete record of a model ``host`` serves, as a probe returns it.

    The identifier is ``name:runtime@host:port``; the provider is inferred from
    the name unless given; prices are 0 (local); ``source`` is ``discovered``.
    Other keyword arguments are :class:`~llmfactory.registry.models.LLMModel`
    fields (``context_length``, ``family``, ``digest``, …).
    """
    from llmfactory.registry.models import LLMModel, infer_provider

    row = dict(_row_defaults())
    row.update(fields)
    row["identifier"] = f"{name}:{host.runtime}@{host.address}"
    row["name"] = name
    row["provider"] = provider or infer_provider(name)
    row["runtime"] = host.runtime
    row["host"] = str(host.address)
    row["capabilities"] = sorted(set(capabilities))
    row["extras"] = {k: v for k, v in (extras or {}).items() if v is not None}
    row["first_seen"] = now
    row["last_seen"] = now
    if set(row) != set(LLMModel.model_fields):
        unknown = sorted(set(row) - set(LLMModel.model_fields))
        raise TypeError(f"discovered_model() got unknown field(s) {', '.join(unknown)}")
    return LLMModel.from_row(row)
