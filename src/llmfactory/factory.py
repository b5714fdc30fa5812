"""LLMFactory: the process-wide registry of models, and the module-level shortcuts.

``LLMFactory.instance()`` (or the module functions ``ensure_initialized``,
``list_models``, ``get_model``, …) gives the one shared factory, initialised
lazily and thread-safely on first use. Tests and embedders create isolated
instances instead: ``LLMFactory(database_url="sqlite://", discover=False)``.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from llmfactory.config import LLMConfig, Settings
from llmfactory.errors import (
    AmbiguousModelError,
    InvalidIdentifierError,
    LLMFactoryError,
    ModelNotFoundError,
)
from llmfactory.identifiers import ModelIdentifier, parse_identifier
from llmfactory.registry.catalog import catalog_models, catalog_version
from llmfactory.registry.models import Capability, LLMModel, ModelSource, infer_provider
from llmfactory.registry.store import Store

if TYPE_CHECKING:
    from llmfactory.base_llm import BaseLLM
    from llmfactory.extensions.base import ExtensionLike, FactoryExtensions
    from llmfactory.extensions.token_usage import UsageTotals
    from llmfactory.health import HostHealth
    from llmfactory.registry.groups import ReplicaGroup
    from llmfactory.registry.models import HostRecord
    from llmfactory.runtimes.base import Host
    from llmfactory.runtimes.discovery import DiscoveryReport, HostReport

__all__ = [
    "LLMFactory",
    "create_llm",
    "ensure_initialized",
    "get_model",
    "list_models",
    "register_model",
    "unregister_model",
]

logger = logging.getLogger("llmfactory.factory")

_REGISTERABLE_FIELDS = frozenset(
    {
        "name",
        "provider",
        "service",
        "context_length",
        "max_output_tokens",
        "capabilities",
        "input_price_per_million",
        "output_price_per_million",
        "cached_input_price_per_million",
        "family",
        "parameter_size",
        "quantization",
        "size_bytes",
        "digest",
        "extras",
        "available",
    }
)


class LLMFactory:
    """The registry of known models, its store, and (later) the factory of conversations.

    Construct isolated instances freely; :meth:`instance` returns the shared one.
    Nothing touches the disk or the network until :meth:`ensure_initialized`
    (called implicitly by every query).
    """

    _instance: ClassVar[LLMFactory | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        database_url: str | None = None,
        settings: Settings | None = None,
        discover: bool | None = None,
        seed_catalog: bool = True,
        config: LLMConfig | None = None,
    ) -> None:
        self._settings = settings
        self._database_url = database_url
        self.discover = discover  # None: as the settings say
        self._seed_catalog = seed_catalog
        self.config = config or LLMConfig()
        self._lock = threading.RLock()
        self._initialized = False
        self._store: Store | None = None
        self._models: dict[str, LLMModel] = {}
        self._by_name: dict[str, list[str]] = {}
        self._aliases: dict[str, str] = {}
        self._sorted: list[LLMModel] | None = None
        self._discovery: Any = None  # runtimes.discovery.DiscoveryState, made on first use
        self._host_urls: tuple[int, dict[tuple[str, str], str]] | None = None  # see _host_url
        self._extensions: FactoryExtensions | None = None  # defaults and usage, on first use
        self._health: Any = None  # health.HostHealth, made on first use

    # -- the shared instance ------------------------------------------------------

    @classmethod
    def instance(cls) -> LLMFactory:
        """The process-wide factory (created on first use, not yet initialised)."""
        instance = cls._instance
        if instance is None:
            with cls._instance_lock:
                if cls._instance is None:
                    cls._instance = cls()
                instance = cls._instance
        return instance

    @classmethod
    def set_instance(cls, factory: LLMFactory | None) -> LLMFactory | None:
        """Replace the process-wide factory (None resets it); return the previous one.

        Tests use this to install an isolated factory and restore the old one.
        """
        with cls._instance_lock:
            previous = cls._instance
            cls._instance = factory
        return previous

    @classmethod
    def reset_instance(cls) -> None:
        """Close and forget the process-wide factory; the next use creates a fresh one."""
        previous = cls.set_instance(None)
        if previous is not None:
            previous.close()

    # -- initialisation -------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """Settings from the environment and the config file (read on first use)."""
        if self._settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = Settings.load()
        return self._settings

    @property
    def database_url(self) -> str:
        """The registry's SQLAlchemy URL."""
        return self._database_url or self.settings.database_url

    @property
    def store(self) -> Store:
        """The registry database (opened by :meth:`ensure_initialized`)."""
        self.ensure_initialized()
        assert self._store is not None
        return self._store

    @property
    def initialized(self) -> bool:
        """True once :meth:`ensure_initialized` has completed."""
        return self._initialized

    def ensure_initialized(self) -> LLMFactory:
        """Open (create, migrate) the store, load the registry and seed the catalogue; once.

        Safe to call from many threads: one initialises, the others wait.
        """
        if self._initialized:
            return self
        with self._lock:
            if self._initialized:
                return self
            default_location = self._database_url is None and not (
                self.settings.database_url_from_env
            )
            store = Store(self.database_url, create_dirs=default_location)
            try:
                self._store = store
                if self._seed_catalog:
                    self._seed(store)
                self._reload_locked()
            except BaseException:
                store.close()
                self._store = None
                raise
            self._initialized = True
            self._after_initialized()
        return self

    def _after_initialized(self) -> None:
        """Hook run once after the registry is loaded: start-up discovery.

        Probes the configured runtimes when ``discover`` is True, or None and the
        settings enable discovery; problems are logged, never raised.
        """
        from llmfactory.runtimes.discovery import discover_at_startup

        discover_at_startup(self)

    def _seed(self, store: Store) -> None:
        version = catalog_version()
        if store.get_meta("catalog_version") == version:
            return
        store.upsert_models(catalog_models())
        store.set_meta("catalog_version", version)
        logger.debug("seeded the built-in catalogue (version %s)", version)

    def reload(self) -> None:
        """Re-read models and aliases from the store (to see other processes' changes)."""
        self.ensure_initialized()
        with self._lock:
            self._reload_locked()

    def _reload_locked(self) -> None:
        assert self._store is not None
        self._models = {}
        self._by_name = {}
        self._sorted = None
        for model in self._store.load_models():
            self._index(model)
        self._aliases = self._store.load_aliases()
        self._host_urls = None

    def close(self) -> None:
        """Release the store. The factory can be initialised again afterwards.

        Usage rows still being written are written first.
        """
        if self._extensions is not None and not self._extensions.flush(60.0):
            logger.warning("some usage rows were not written before the registry was closed")
        with self._lock:
            if self._store is not None:
                self._store.close()
            self._store = None
            self._initialized = False
            self._models = {}
            self._by_name = {}
            self._aliases = {}
            self._sorted = None

    def __enter__(self) -> LLMFactory:
        return self.ensure_initialized()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the in-memory index ------------------------------------------------------

    def _with_overrides(self, model: LLMModel) -> LLMModel:
        pricing = self._settings.pricing if self._settings is not None else {}
        override = pricing.get(model.identifier) or pricing.get(model.name)
        if override is None:
            return model
        changes: dict[str, Any] = {}
        if override.input is not None:
            changes["input_price_per_million"] = override.input
        if override.output is not None:
            changes["output_price_per_million"] = override.output
        if override.cached_input is not None:
            changes["cached_input_price_per_million"] = override.cached_input
        return model.copy_with(**changes) if changes else model

    def _index(self, model: LLMModel) -> None:
        model = self._with_overrides(model)
        previous = self._models.get(model.identifier)
        self._models[model.identifier] = model
        if previous is None:
            for key in self._name_keys(model):
                self._by_name.setdefault(key, []).append(model.identifier)
        self._sorted = None

    def _unindex(self, identifier: str) -> None:
        model = self._models.pop(identifier, None)
        if model is None:
            return
        for key in self._name_keys(model):
            ids = self._by_name.get(key, [])
            if identifier in ids:
                ids.remove(identifier)
            if not ids:
                self._by_name.pop(key, None)
        self._sorted = None

    @staticmethod
    def _name_keys(model: LLMModel) -> list[str]:
        keys = [model.name]
        # Ollama reads "llama3" as "llama3:latest"; so do we.
        if model.runtime == "ollama" and model.name.endswith(":latest"):
            keys.append(model.name[: -len(":latest")])
        return keys

    def _apply(self, models: Iterable[LLMModel]) -> None:
        with self._lock:
            for model in models:
                self._index(model)

    # -- queries ------------------------------------------------------------------

    def list_models(
        self,
        *,
        runtime: str | None = None,
        provider: str | None = None,
        capability: str | Capability | Sequence[str | Capability] | None = None,
        available: bool | None = None,
        host: str | None = None,
        search: str | None = None,
        source: str | None = None,
    ) -> list[LLMModel]:
        """Known models (cloud models first, then by provider and identifier), filtered.

        ``capability`` may be one name or several (all required); ``search`` is a
        case-insensitive substring of the identifier, name or family; ``host``
        matches ``host:port`` or just the host name.
        """
        self.ensure_initialized()
        models = self._sorted
        if models is None:
            with self._lock:
                models = self._sorted = sorted(self._models.values(), key=_sort_key)
        if runtime is not None:
            runtime_l = runtime.lower()
            models = [m for m in models if m.runtime == runtime_l]
        if provider is not None:
            provider_l = provider.lower()
            models = [m for m in models if m.provider == provider_l]
        if capability is not None:
            wanted = (
                [capability] if isinstance(capability, (str, Capability)) else list(capability)
            )
            names = [Capability.parse(c).value for c in wanted]
            models = [m for m in models if all(n in m.capabilities for n in names)]
        if available is not None:
            models = [m for m in models if m.available == available]
        if host is not None:
            host_l = host.lower()
            models = [
                m
                for m in models
                if m.host is not None and (m.host == host_l or m.host.rsplit(":", 1)[0] == host_l)
            ]
        if source is not None:
            models = [m for m in models if m.source == source]
        if search:
            needle = search.lower()
            models = [
                m
                for m in models
                if needle in m.identifier.lower()
                or needle in m.name.lower()
                or (m.family is not None and needle in m.family.lower())
            ]
        return list(models)

    def get_model(self, identifier: str | LLMModel) -> LLMModel:
        """Resolve an identifier, alias or unique model name to its :class:`LLMModel`.

        Order: a user alias; the exact identifier; a unique model name (several
        matches raise :class:`AmbiguousModelError`); else :class:`ModelNotFoundError`
        with the closest identifiers as suggestions.
        """
        return self._lookup(identifier, suggest=True)

    def _lookup(self, identifier: str | LLMModel, *, suggest: bool) -> LLMModel:
        """:meth:`get_model`; without ``suggest`` a ModelNotFoundError has no suggestions
        (finding them compares the name with every known model: slow in a big registry)."""
        if isinstance(identifier, LLMModel):
            identifier = identifier.identifier
        if not self._initialized:
            self.ensure_initialized()
        target = self._aliases.get(identifier)
        if target is not None:
            model = self._models.get(target)
            if model is None:
                raise ModelNotFoundError(
                    identifier,
                    hint=f" (the alias points at {target!r}, which is no longer registered; "
                    f"run `llmfactory alias {identifier} NEW_ID`)",
                )
            return model
        model = self._models.get(identifier)
        if model is not None:
            return model
        return self._resolve_slow(identifier, suggest=suggest)

    def _resolve_slow(self, identifier: str, *, suggest: bool = True) -> LLMModel:
        parsed = parse_identifier(identifier)  # raises InvalidIdentifierError when malformed
        canonical = str(parsed)
        model = self._models.get(canonical)
        if model is not None:
            return model
        if parsed.runtime == "ollama" and ":" not in parsed.model.rsplit("/", 1)[-1]:
            model = self._models.get(f"{parsed.model}:latest:ollama@{parsed.host}")
            if model is not None:
                return model
        if parsed.is_cloud:
            ids = self._by_name.get(parsed.model, [])
            if len(ids) == 1:
                return self._models[ids[0]]
            if len(ids) > 1:
                raise AmbiguousModelError(identifier, sorted(ids))
        if parsed.host is not None and parsed.host.startswith("any:"):
            from llmfactory.registry.groups import is_any_host, record_for_any

            if is_any_host(parsed):  # "name:runtime@any": the one host serving it
                models = self.list_models(runtime=parsed.runtime)
                return record_for_any(models, parsed, identifier, self.suggest)
        found = self._resolve_unknown(parsed)
        if found is not None:
            return found
        raise ModelNotFoundError(identifier, self.suggest(identifier) if suggest else ())

    def _resolve_unknown(self, parsed: ModelIdentifier) -> LLMModel | None:
        """Hook for identifiers not in the registry: probe their host if it is not known yet."""
        if parsed.is_cloud:
            return None
        from llmfactory.runtimes.discovery import probe_unknown

        return probe_unknown(self, parsed)

    def find_model(self, identifier: str) -> LLMModel | None:
        """Like :meth:`get_model` but None instead of an error when nothing matches."""
        try:
            return self.get_model(identifier)
        except (ModelNotFoundError, InvalidIdentifierError):
            return None

    def suggest(self, text: str, limit: int = 5) -> list[str]:
        """The identifiers closest to ``text`` (for "did you mean" messages)."""
        candidates = list(self._models)
        lowered = text.lower()
        contains = [c for c in candidates if lowered and lowered in c.lower()]
        close = difflib.get_close_matches(text, candidates, n=limit, cutoff=0.5)
        by_name = difflib.get_close_matches(
            text.rsplit("@", 1)[0].rsplit(":", 1)[0] if "@" in text else text,
            list(self._by_name),
            n=limit,
            cutoff=0.6,
        )
        result: list[str] = []
        for item in [*close, *contains[:limit]]:
            if item not in result:
                result.append(item)
        for name in by_name:
            for ident in sorted(self._by_name.get(name, [])):
                if ident not in result:
                    result.append(ident)
        return result[:limit]

    # -- changes ------------------------------------------------------------------

    def register_model(self, model: str | LLMModel, /, **fields: Any) -> LLMModel:
        """Add a model, or set fields on a known one; what the user sets here sticks.

        ``register_model("my-model:ollama@gpu:11434", context_length=8192)`` or
        ``register_model(LLMModel(...))``. Fields set by the user are recorded in
        ``user_fields`` and survive rediscovery and catalogue updates. Prices may be
        given as ``input_price_per_million`` / ``output_price_per_million``.
        """
        self.ensure_initialized()
        if isinstance(model, LLMModel):
            given = {
                k: v
                for k, v in model.to_row().items()
                if k in _REGISTERABLE_FIELDS and v is not None and k != "available"
            }
            given.update(fields)
            identifier = model.identifier
        else:
            given = dict(fields)
            identifier = model
        unknown = sorted(set(given) - _REGISTERABLE_FIELDS)
        if unknown:
            raise TypeError(
                f"register_model() got unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_REGISTERABLE_FIELDS))}"
            )
        parsed = parse_identifier(identifier)
        identifier = str(parsed)
        if "capabilities" in given:
            given["capabilities"] = sorted(
                {Capability.parse(c).value for c in given["capabilities"]}
            )
        for key in ("context_length", "max_output_tokens"):
            value = given.get(key)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{key} must be a positive integer, not {value!r}")
        for key in ("input_price_per_million", "output_price_per_million",
                    "cached_input_price_per_million"):
            value = given.get(key)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{key} must be a number >= 0, not {value!r}")
        now = datetime.now(timezone.utc)

        def change(existing: LLMModel | None) -> LLMModel:
            if existing is None:
                base: dict[str, Any] = {
                    "identifier": identifier,
                    "name": parsed.model,
                    "provider": infer_provider(parsed.model),
                    "runtime": parsed.runtime or "api",
                    "host": parsed.host,
                    "capabilities": ["chat", "streaming"],
                    "source": ModelSource.USER.value,
                    "available": True,
                    "first_seen": now,
                    "last_seen": now,
                }
                base.update(given)
                base["user_fields"] = sorted(set(given) - {"name"})
                return LLMModel(**base)
            updated = existing.copy_with(**given)
            updated.user_fields = sorted(set(existing.user_fields) | (set(given) - {"name"}))
            return updated

        with self._lock:
            stored = self.store.update_model(identifier, change)
            assert stored is not None
            self._unindex(identifier)
            self._index(stored)
            return self._models[identifier]

    def add_models(self, models: Iterable[LLMModel]) -> list[LLMModel]:
        """Upsert models as discovery or a plugin found them (merged, user fields kept)."""
        self.ensure_initialized()
        with self._lock:
            stored = self.store.upsert_models(models)
            for model in stored:
                self._unindex(model.identifier)
                self._index(model)
        return stored

    def unregister_model(self, identifier: str) -> bool:
        """Delete a model from the registry; True when it was there.

        A discovered model comes back at the next discovery if its host still
        serves it; a built-in one at the next catalogue update.
        """
        self.ensure_initialized()
        model = self.find_model(identifier)
        key = model.identifier if model is not None else identifier
        with self._lock:
            existed = self.store.delete_model(key)
            self._unindex(key)
            self._aliases = {k: v for k, v in self._aliases.items() if v != key}
        return existed

    # -- discovery ----------------------------------------------------------------

    def refresh(
        self,
        hosts: Iterable[Host | str | tuple[str, str]] | None = None,
        mdns: bool | None = None,
    ) -> DiscoveryReport:
        """Probe runtimes again and reconcile the registry; return what happened.

        ``hosts`` None probes every configured host (see ``docs/discovery.md``);
        otherwise only these (``"ollama=http://gpu:11434"``, a URL, a
        ``(runtime, url)`` pair or a :class:`~llmfactory.runtimes.base.Host`).
        ``mdns`` None follows the settings (``discovery.mdns``).
        """
        from llmfactory.runtimes.discovery import factory_refresh

        return factory_refresh(self, hosts, mdns)

    async def arefresh(
        self,
        hosts: Iterable[Host | str | tuple[str, str]] | None = None,
        mdns: bool | None = None,
    ) -> DiscoveryReport:
        """:meth:`refresh` for async code (asyncio or trio)."""
        from llmfactory.runtimes.discovery import factory_arefresh

        return await factory_arefresh(self, hosts, mdns)

    @property
    def last_discovery(self) -> DiscoveryReport | None:
        """The report of the last discovery this factory ran (None before any)."""
        state = self._discovery
        return state.last_report if state is not None else None

    def add_host(self, runtime: str, url: str, *, probe: bool = True) -> HostRecord:
        """Remember a host (persisted in the registry) and probe it now unless ``probe=False``.

        ``add_host("ollama", "http://gpu-box:11434")``; every later discovery probes it.
        """
        from llmfactory.runtimes.discovery import factory_add_host

        return factory_add_host(self, runtime, url, probe=probe)

    def remove_host(self, runtime: str, url: str) -> bool:
        """Forget a stored host; True when it was stored. Its models stay in the registry."""
        from llmfactory.runtimes.discovery import factory_remove_host

        return factory_remove_host(self, runtime, url)

    def hosts(self) -> list[HostRecord]:
        """Known hosts with what the last probe found (status, version, models, errors)."""
        from llmfactory.runtimes.discovery import factory_hosts

        return factory_hosts(self)

    def check_hosts(
        self,
        hosts: Iterable[Host | str | tuple[str, str]] | None = None,
        *,
        timeout: float = 2.0,
    ) -> list[HostReport]:
        """Probe hosts cheaply (one request each, concurrently) and record their status.

        ``hosts`` None checks every known host (:meth:`hosts`). Unlike
        :meth:`refresh`, models are neither listed nor changed; each host's
        record (``status``, ``last_checked``, ``last_error``) and
        :attr:`host_health` are updated. See ``docs/replicas.md``.
        """
        from llmfactory.health import check_hosts
        from llmfactory.runtimes.discovery import run_sync

        self.ensure_initialized()
        return run_sync(lambda: check_hosts(self, hosts, timeout=timeout))

    async def acheck_hosts(
        self,
        hosts: Iterable[Host | str | tuple[str, str]] | None = None,
        *,
        timeout: float = 2.0,
    ) -> list[HostReport]:
        """:meth:`check_hosts` for async code (asyncio or trio)."""
        from llmfactory.health import check_hosts

        if not self._initialized:
            import anyio

            await anyio.to_thread.run_sync(self.ensure_initialized)
        return await check_hosts(self, hosts, timeout=timeout)

    @property
    def host_health(self) -> HostHealth:
        """Hosts that failed a call or a check recently and are cooling down (in memory).

        Set ``host_health.cooldown`` (seconds, 30 by default) to change how long a
        failed host is tried last by replica sets and fallback chains.
        """
        from llmfactory.health import health_of

        return health_of(self)

    # -- aliases ------------------------------------------------------------------

    @property
    def aliases(self) -> dict[str, str]:
        """User aliases, name → identifier."""
        self.ensure_initialized()
        return dict(self._aliases)

    def set_alias(self, name: str, identifier: str) -> LLMModel:
        """Make ``name`` resolve to ``identifier`` (persisted); return the target model."""
        self.ensure_initialized()
        if not name or name != name.strip() or any(c.isspace() for c in name):
            raise ValueError(f"alias {name!r} must be a non-empty word without spaces")
        model = self.get_model(identifier)
        with self._lock:
            self.store.set_alias(name, model.identifier)
            self._aliases[name] = model.identifier
        return model

    def remove_alias(self, name: str) -> bool:
        """Delete an alias; True when it existed."""
        self.ensure_initialized()
        with self._lock:
            existed = self.store.delete_alias(name)
            self._aliases.pop(name, None)
        return existed

    # -- conversations --------------------------------------------------------------

    def create_llm(
        self,
        identifier: str | LLMModel,
        config: LLMConfig | None = None,
        *,
        fallbacks: Sequence[str | LLMModel] | None = None,
    ) -> BaseLLM:
        """A new conversation with a model: the call agents make.

        ``identifier`` is anything :meth:`get_model` resolves (identifier, alias,
        unique name) or an :class:`LLMModel` from :meth:`list_models`. A full
        ``model:runtime@host`` identifier works even when the registry does not
        know it (for Ollama ``llama3`` means ``llama3:latest``). The class is
        chosen by the model's runtime, or cloud service
        (:mod:`llmfactory.api.registry`); the config is merged as catalogue
        defaults < config file ``[defaults]`` < this factory's config <
        ``config``. No request is sent until the first message (an unknown
        host may be probed once, when discovery is on, to learn its models).

        ``name:runtime@any``, or a bare name that only replicas of one model
        share (several hosts serving it), gives a
        :class:`~llmfactory.replicas.ReplicaLLM` that fails over between hosts;
        ``fallbacks`` (more identifiers) a
        :class:`~llmfactory.fallback.FallbackLLM` that moves to the next model
        when one is unavailable. See ``docs/replicas.md``.

        Raises:
            ModelNotFoundError: nothing matches (with suggestions); for a fallback
                list, any of its names.
            ConfigError: no class talks to the model's runtime or service.
        """
        llm: BaseLLM
        if fallbacks:
            from llmfactory.fallback import FallbackLLM

            llm = FallbackLLM([self._build_llm(i, config) for i in (identifier, *fallbacks)])
        else:
            llm = self._build_llm(identifier, config)
        llm._factory = self
        self._extension_defaults().attach(llm, self.settings.extensions)
        return llm

    def _build_llm(self, identifier: str | LLMModel, config: LLMConfig | None) -> BaseLLM:
        """The conversation for one model or replica set, without extensions."""
        if isinstance(identifier, LLMModel):
            return self._new_llm(identifier, config)
        resolved = self._model_for_llm(identifier)
        if isinstance(resolved, LLMModel):
            return self._new_llm(resolved, config)
        from llmfactory.replicas import replica_llm

        return replica_llm(self, resolved, config)

    def _new_llm(self, model: LLMModel, config: LLMConfig | None) -> BaseLLM:
        """The wire-protocol conversation for one model record, without extensions."""
        from llmfactory.api.registry import llm_class_for, spec_for_model

        spec = spec_for_model(model)
        settings = self.settings
        defaults = model.extras.get("llm_config")  # catalogue defaults, when a model has some
        base = (
            LLMConfig.from_mapping(defaults, where=f"{model.identifier}: llm_config")
            if isinstance(defaults, dict)
            else LLMConfig()
        )
        merged = base.merged(settings.defaults).merged(self.config).merged(config)
        llm = llm_class_for(spec)(
            model, merged, settings=settings, host_url=self._host_url(model), spec=spec
        )
        llm._factory = self
        return llm

    # -- extensions ---------------------------------------------------------------

    def _extension_defaults(self) -> FactoryExtensions:
        extensions = self._extensions
        if extensions is None:
            from llmfactory.extensions.base import FactoryExtensions

            with self._lock:
                if self._extensions is None:
                    self._extensions = FactoryExtensions(self)
                extensions = self._extensions
        return extensions

    def register_extension(
        self,
        extension: ExtensionLike,
        *,
        runtimes: str | Iterable[str] | None = None,
        providers: str | Iterable[str] | None = None,
    ) -> None:
        """Register ``extension`` on every conversation this factory creates from now on.

        ``extension`` is a class (a new instance per conversation), an instance
        (shared by all of them, e.g. to share a rate limit) or a registered name.
        ``runtimes`` / ``providers`` restrict it to models served by those
        runtimes (``ollama``, ``api``, …) or made by those providers
        (``openai``, ``meta``, …). Every conversation also gets a
        :class:`~llmfactory.extensions.TokenUsageTrackingExtension` and the
        extensions named in the config file's ``[extensions] enabled`` list,
        before these.

        Raises:
            ConfigError: ``extension`` is a name no extension has.
        """
        self._extension_defaults().register(extension, runtimes=runtimes, providers=providers)

    def unregister_extension(self, extension: ExtensionLike) -> bool:
        """Stop registering ``extension`` on new conversations; True when it was registered."""
        return self._extension_defaults().unregister(extension)

    @property
    def usage(self) -> UsageTotals:
        """Tokens, cost and errors of every call made by this factory's conversations in
        this process (``llmfactory usage`` reads the registry, across processes)."""
        return self._extension_defaults().usage()

    def flush_usage(self, timeout: float | None = None) -> bool:
        """Wait until every usage row is written to the registry; False on timeout."""
        extensions = self._extensions
        return True if extensions is None else extensions.flush(timeout)

    def _model_for_llm(self, identifier: str) -> LLMModel | ReplicaGroup:
        from llmfactory.registry.groups import group_for_any, group_for_candidates, is_any_host

        served = False  # a full model:runtime@host identifier: never "not found" (see below)
        if "@" in identifier and identifier not in self._aliases:
            wanted = parse_identifier(identifier)
            if is_any_host(wanted):  # "name:runtime@any": a replica set of whoever serves it
                models = self.list_models(runtime=wanted.runtime)
                return group_for_any(models, wanted, identifier, self.suggest)
            served = wanted.runtime is not None and wanted.host is not None
        try:
            return self._lookup(identifier, suggest=not served)
        except AmbiguousModelError as exc:
            group = group_for_candidates(self.list_models(), exc.candidates)
            if group is None:
                raise
            return group
        except ModelNotFoundError:
            parsed = parse_identifier(identifier)
            if parsed.runtime is None or parsed.host is None:
                raise
            from llmfactory.api.registry import runtime_spec

            runtime_spec(parsed.runtime)  # an unknown runtime is a clear error here
            name = parsed.model
            if parsed.runtime == "ollama" and ":" not in name.rsplit("/", 1)[-1]:
                name += ":latest"  # as Ollama itself reads it
            now = datetime.now(timezone.utc)
            return LLMModel(
                identifier=f"{name}:{parsed.runtime}@{parsed.host}",
                name=name,
                provider=infer_provider(name),
                runtime=parsed.runtime,
                host=parsed.host,
                capabilities=["chat", "streaming"],
                source=ModelSource.USER.value,
                available=True,
                first_seen=now,
                last_seen=now,
            )

    def _host_url(self, model: LLMModel) -> str | None:
        """The base URL of a served model's host (scheme and path prefix from its record)."""
        if model.host is None:
            return None
        # The host records are read once, not for every conversation: they are cached
        # until this process changes them (Store.hosts_version) or reload() is called.
        store = self.store
        cached = self._host_urls
        if cached is None or cached[0] != store.hosts_version:
            try:
                urls = {(r.runtime, r.address): r.base_url for r in store.load_hosts()}
            except LLMFactoryError:  # pragma: no cover - the registry is unreadable
                logger.debug("cannot read host records", exc_info=True)
                urls = {}
            cached = self._host_urls = (store.hosts_version, urls)
        return cached[1].get((model.runtime, model.host)) or f"http://{model.host}"

    def __repr__(self) -> str:
        state = f"{len(self._models)} models" if self._initialized else "not initialised"
        return f"LLMFactory({state})"


def _sort_key(model: LLMModel) -> tuple[bool, str, str]:
    values = model.__dict__  # plain dict access: sorting 100 000 models stays fast
    return (values["host"] is not None, values["provider"], values["identifier"])


# -- module-level shortcuts over the shared instance ------------------------------


def create_llm(
    identifier: str | LLMModel,
    config: LLMConfig | None = None,
    *,
    fallbacks: Sequence[str | LLMModel] | None = None,
) -> BaseLLM:
    """:meth:`LLMFactory.create_llm` on the process-wide factory."""
    return LLMFactory.instance().create_llm(identifier, config, fallbacks=fallbacks)


def ensure_initialized() -> LLMFactory:
    """Initialise the process-wide factory (once) and return it."""
    return LLMFactory.instance().ensure_initialized()


def list_models(**filters: Any) -> list[LLMModel]:
    """:meth:`LLMFactory.list_models` on the process-wide factory."""
    return LLMFactory.instance().list_models(**filters)


def get_model(identifier: str) -> LLMModel:
    """:meth:`LLMFactory.get_model` on the process-wide factory."""
    return LLMFactory.instance().get_model(identifier)


def register_model(model: str | LLMModel, /, **fields: Any) -> LLMModel:
    """:meth:`LLMFactory.register_model` on the process-wide factory."""
    return LLMFactory.instance().register_model(model, **fields)


def unregister_model(identifier: str) -> bool:
    """:meth:`LLMFactory.unregister_model` on the process-wide factory."""
    return LLMFactory.instance().unregister_model(identifier)
