"""Probe every host concurrently, within bounds, and reconcile what was found.

:func:`probe_hosts` probes hosts in one anyio task group. Each host first
gets a plain TCP connect bounded by the connect timeout (about 0.5 s): a
refused port costs nothing and a black-holed host at most that; only hosts
that accept a connection get the runtime's HTTP probe (sharing one
:class:`httpx.AsyncClient`), and every host's probe ends by the overall
deadline (about 3 s) — no host can delay the others past it, and the run
ends as soon as every host has answered or failed.

:func:`reconcile` turns the outcomes into registry changes:

* a host that answered: its models are added or refreshed (``last_seen``
  now, available); its models that it no longer lists are marked unavailable;
* a host that could not be reached (refused, timed out): its models are
  marked unavailable and otherwise kept as they were (``last_seen`` kept);
* a host that answered wrongly (HTML, HTTP 500, malformed JSON): its models
  are left exactly as they were.

Nothing is deleted, and fields the user set on a model (prices, a context
override — see ``user_fields``) survive every rediscovery.

The ``factory_*`` functions back the methods of
:class:`~llmfactory.factory.LLMFactory` (``refresh``, ``arefresh``, ``add_host``,
``remove_host``, ``hosts``); the module-level :func:`refresh`, :func:`arefresh`,
:func:`add_host`, :func:`remove_host` and :func:`list_hosts` act on the
process-wide factory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from llmfactory.errors import ConfigError, LLMFactoryError, RuntimeUnavailableError
from llmfactory.identifiers import ModelIdentifier
from llmfactory.runtimes.base import Host, ProbeResult, get_runtime, plugin_errors
from llmfactory.runtimes.hosts import (
    DEFAULT_LOCAL_HOSTS,
    PERSISTENT_SOURCES,
    configured_hosts,
    dedupe,
    host_from_url,
    split_runtime_url,
)

if TYPE_CHECKING:
    import httpx

    from llmfactory.factory import LLMFactory
    from llmfactory.registry.models import HostRecord, LLMModel
    from llmfactory.runtimes.http import HTTPClients, ProbeClient

__all__ = [
    "DiscoveryReport",
    "HostOutcome",
    "HostReport",
    "ProbeOptions",
    "Reconciliation",
    "add_host",
    "arefresh",
    "list_hosts",
    "probe_hosts",
    "reconcile",
    "refresh",
    "remove_host",
]

logger = logging.getLogger("llmfactory.discovery")

T = TypeVar("T")
StatusCallback = Callable[["HostReport"], None]


# -- values ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeOptions:
    """How a discovery run probes: timeouts, concurrency, limits, mDNS.

    ``describe_concurrency`` bounds the per-model requests (Ollama's ``/api/show``)
    in flight to one host, ``describe_concurrency_total`` those to all hosts.
    """

    connect_timeout: float = 0.5
    deadline: float = 3.0
    describe_concurrency: int = 2
    describe_concurrency_total: int = 256
    max_body_bytes: int = 8 * 1024 * 1024
    mdns: bool = False
    mdns_timeout: float = 2.0
    mdns_interfaces: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HostReport:
    """What happened at one host: ``status`` is ``probing`` (while it runs), ``ok``,
    ``unreachable`` (refused, timed out, no answer) or ``error`` (answered wrongly)."""

    runtime: str
    address: str
    base_url: str
    source: str
    status: str
    version: str | None = None
    api: str | None = None
    model_count: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()
    elapsed: float = 0.0

    @property
    def key(self) -> str:
        """``runtime@host:port``."""
        return f"{self.runtime}@{self.address}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "runtime": self.runtime,
            "address": self.address,
            "url": self.base_url,
            "source": self.source,
            "status": self.status,
            "version": self.version,
            "api": self.api,
            "model_count": self.model_count,
            "error": self.error,
            "warnings": list(self.warnings),
            "elapsed": round(self.elapsed, 4),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HostOutcome:
    """One host's probe: its report and, when it answered, the :class:`ProbeResult`."""

    host: Host
    report: HostReport
    result: ProbeResult | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryReport:
    """What one discovery run found and changed.

    ``added`` are identifiers new to the registry, ``updated`` known ones seen
    again, ``unavailable`` those now marked unavailable (their host did not list
    them, or could not be reached); ``warnings`` are configuration or plugin
    problems that did not stop the run.
    """

    hosts: tuple[HostReport, ...] = ()
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unavailable: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    elapsed: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def ok(self) -> tuple[HostReport, ...]:
        """Hosts that answered."""
        return tuple(h for h in self.hosts if h.status == "ok")

    @property
    def unreachable(self) -> tuple[HostReport, ...]:
        """Hosts that could not be reached or did not answer in time."""
        return tuple(h for h in self.hosts if h.status == "unreachable")

    @property
    def errors(self) -> tuple[HostReport, ...]:
        """Hosts that answered, but not as their runtime should."""
        return tuple(h for h in self.hosts if h.status == "error")

    def host(self, key: str) -> HostReport | None:
        """The report of ``runtime@host:port``, or None."""
        return next((h for h in self.hosts if h.key == key), None)

    def summary(self) -> str:
        """One line: hosts ok / unreachable / errors, models added / updated / unavailable."""
        return (
            f"{len(self.hosts)} host(s): {len(self.ok)} ok, {len(self.unreachable)} unreachable, "
            f"{len(self.errors)} error(s); models: {len(self.added)} added, "
            f"{len(self.updated)} updated, {len(self.unavailable)} now unavailable "
            f"({self.elapsed:.2f} s)"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what ``llmfactory discover --json`` prints)."""
        return {
            "hosts": [h.to_dict() for h in self.hosts],
            "summary": {
                "hosts": len(self.hosts),
                "ok": len(self.ok),
                "unreachable": len(self.unreachable),
                "errors": len(self.errors),
                "added": len(self.added),
                "updated": len(self.updated),
                "unavailable": len(self.unavailable),
            },
            "added": list(self.added),
            "updated": list(self.updated),
            "unavailable": list(self.unavailable),
            "warnings": list(self.warnings),
            "elapsed": round(self.elapsed, 4),
            "started_at": self.started_at.isoformat(),
        }


# -- probing -----------------------------------------------------------------------


def _report(host: Host, status: str, start: float, **fields: Any) -> HostReport:
    return HostReport(
        runtime=host.runtime,
        address=str(host.address),
        base_url=host.base_url,
        source=host.source,
        status=status,
        elapsed=max(0.0, anyio.current_time() - start),
        **fields,
    )


def _reason(exc: OSError) -> str:
    """A short reason for a failed connect ("connection refused", "name not known", …)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, OSError) and seen.strerror:
            return str(seen.strerror).lower()
        seen = seen.__cause__
    return str(exc) or type(exc).__name__


async def _connect_check(host: Host, connect_timeout: float) -> None:
    """A plain TCP connect: refused and black-holed hosts fail here, cheaply."""
    timeout = connect_timeout
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host.address.host, host.address.port)
    except TimeoutError:
        raise RuntimeUnavailableError(
            f"{host.key}: no connection within {timeout:g} s (the host is down, or a firewall "
            "drops the packets)",
            host=str(host.address),
            runtime=host.runtime,
        ) from None
    except OSError as exc:
        raise RuntimeUnavailableError(
            f"{host.key}: cannot connect to {host.base_url} ({_reason(exc)}); is "
            f"{host.runtime} running there?",
            host=str(host.address),
            runtime=host.runtime,
        ) from exc
    await stream.aclose()


class _LazyClients:
    """The run's HTTP clients; httpx is imported only once a host accepts a connection."""

    def __init__(self, options: ProbeOptions) -> None:
        self.options = options
        self.clients: HTTPClients | None = None
        self.describe_limiter = anyio.CapacityLimiter(max(1, options.describe_concurrency_total))

    def for_host(self, host: Host) -> httpx.AsyncClient:
        if self.clients is None:
            from llmfactory.runtimes.http import HTTPClients

            self.clients = HTTPClients(
                connect_timeout=self.options.connect_timeout,
                deadline=self.options.deadline,
                max_connections=self.options.describe_concurrency + 2,
            )
        return self.clients.for_host(host)

    async def aclose(self) -> None:
        if self.clients is not None:
            await self.clients.aclose()


async def _probe_one(
    host: Host,
    options: ProbeOptions,
    http: _LazyClients,
    known: Callable[[str], LLMModel | None],
    env: Mapping[str, str],
    emit: Callable[[HostOutcome], None],
) -> None:
    start = anyio.current_time()
    deadline = start + options.deadline
    emit(HostOutcome(host=host, report=_report(host, "probing", start)))
    outcome: HostOutcome | None = None
    client: ProbeClient | None = None
    with anyio.move_on_at(deadline):
        try:
            runtime = get_runtime(host.runtime)
            if getattr(runtime, "requires_network", True):  # the mock runtime: no network
                await _connect_check(host, options.connect_timeout)
            from llmfactory.runtimes.http import ProbeClient

            client = ProbeClient(
                http.for_host(host),
                host,
                deadline=deadline,
                known_model=known,
                env=env,
                describe_concurrency=options.describe_concurrency,
                shared_limiter=http.describe_limiter,
                max_body_bytes=options.max_body_bytes,
            )
            result = await runtime.probe(client, host)
            if not isinstance(result, ProbeResult):
                raise ConfigError(
                    f"runtime {host.runtime!r} returned {type(result).__name__} from probe(), "
                    "not a ProbeResult"
                )
            outcome = HostOutcome(
                host=host,
                result=result,
                report=_report(host, "ok", start, version=result.version, api=result.api,
                               model_count=len(result.models), warnings=result.warnings),
            )
        except RuntimeUnavailableError as exc:
            outcome = HostOutcome(host=host, report=_report(host, "unreachable", start,
                                                            error=str(exc)))
        except LLMFactoryError as exc:
            outcome = HostOutcome(host=host, report=_report(host, "error", start, error=str(exc)))
        except Exception as exc:  # a plugin's bug must not break the other hosts
            logger.warning("probing %s failed unexpectedly", host.key, exc_info=True)
            outcome = HostOutcome(
                host=host,
                report=_report(host, "error", start,
                               error=f"{host.key}: {type(exc).__name__}: {exc}"),
            )
    if outcome is None and client is not None and client.provisional is not None:
        partial = client.provisional
        outcome = HostOutcome(
            host=host,
            result=partial,
            report=_report(host, "ok", start, version=partial.version, api=partial.api,
                           model_count=len(partial.models), warnings=partial.warnings),
        )
    if outcome is None:
        outcome = HostOutcome(
            host=host,
            report=_report(
                host, "unreachable", start,
                error=f"{host.key}: no complete answer within the {options.deadline:g} s "
                "deadline (raise discovery.deadline if the host is just slow)",
            ),
        )
    emit(outcome)


async def probe_hosts(
    hosts: Sequence[Host],
    options: ProbeOptions | None = None,
    *,
    known: Mapping[str, LLMModel] | Callable[[str], LLMModel | None] | None = None,
    env: Mapping[str, str] | None = None,
    on_status: StatusCallback | None = None,
) -> tuple[list[HostOutcome], list[str]]:
    """Probe ``hosts`` (and, with ``options.mdns``, the LAN) concurrently.

    Returns the outcomes, in the order hosts were given (hosts found on the LAN
    last), and problems met on the way (mDNS). ``known`` is the registry's
    records (identifier → model), used as the describe cache; ``on_status`` is
    called with each host's report when its probe starts and when it ends.
    """
    options = options or ProbeOptions()
    env = env if env is not None else {}
    lookup: Callable[[str], LLMModel | None]
    if known is None:
        lookup = lambda _identifier: None  # noqa: E731
    elif callable(known):
        lookup = known
    else:
        lookup = known.get
    outcomes: dict[str, HostOutcome] = {}
    order = [h.key for h in dedupe(hosts)]
    problems: list[str] = []

    def emit(outcome: HostOutcome) -> None:
        if outcome.report.status != "probing":
            outcomes[outcome.host.key] = outcome
        if on_status is not None:
            try:
                on_status(outcome.report)
            except Exception:  # a display callback must not break discovery
                logger.debug("status callback failed", exc_info=True)

    http = _LazyClients(options)
    try:
        async with anyio.create_task_group() as tg:
            for host in dedupe(hosts):
                tg.start_soon(_probe_one, host, options, http, lookup, env, emit)
            if options.mdns:
                tg.start_soon(_browse_and_probe, set(order), options, http, lookup, env, emit,
                              order, problems)
    finally:
        await http.aclose()
    return [outcomes[key] for key in order if key in outcomes], problems


async def _browse_and_probe(
    taken: set[str],
    options: ProbeOptions,
    http: _LazyClients,
    known: Callable[[str], LLMModel | None],
    env: Mapping[str, str],
    emit: Callable[[HostOutcome], None],
    order: list[str],
    problems: list[str],
) -> None:
    from llmfactory.runtimes.mdns import abrowse

    try:
        found, bad = await abrowse(options.mdns_timeout, interfaces=options.mdns_interfaces)
    except Exception as exc:  # no multicast here, no permission, …
        problems.append(f"mDNS browsing failed: {exc}")
        return
    problems.extend(bad)
    async with anyio.create_task_group() as tg:
        for host in found:
            if host.key in taken:
                continue
            taken.add(host.key)
            order.append(host.key)
            tg.start_soon(_probe_one, host, options, http, known, env, emit)


# -- reconciling -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciliation:
    """The registry changes a set of outcomes calls for (see :func:`reconcile`)."""

    upserts: tuple[LLMModel, ...] = ()
    unavailable: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()


def reconcile(
    outcomes: Iterable[HostOutcome], existing: Iterable[LLMModel]
) -> Reconciliation:
    """What to write: the models hosts listed (to upsert) and those now unavailable.

    ``existing`` is what the registry holds. A host that answered refreshes its
    models and makes the ones it no longer lists unavailable; an unreachable
    host makes its models unavailable; a host that answered wrongly changes
    nothing. A model the user marked available (``available`` in its
    ``user_fields``) is never marked unavailable.
    """
    by_host: dict[tuple[str, str], list[LLMModel]] = {}
    known: set[str] = set()
    for model in existing:
        known.add(model.identifier)
        if model.host is not None:
            by_host.setdefault((model.runtime, model.host), []).append(model)
    upserts: list[LLMModel] = []
    unavailable: list[str] = []
    added: list[str] = []
    updated: list[str] = []
    for outcome in outcomes:
        status = outcome.report.status
        place = (outcome.host.runtime, str(outcome.host.address))
        listed: set[str] = set()
        if status == "ok" and outcome.result is not None:
            for model in outcome.result.models:
                listed.add(model.identifier)
                upserts.append(model)
                (updated if model.identifier in known else added).append(model.identifier)
        elif status != "unreachable":
            continue
        for model in by_host.get(place, ()):
            if (
                model.identifier not in listed
                and model.available
                and "available" not in model.user_fields
            ):
                unavailable.append(model.identifier)
    return Reconciliation(upserts=tuple(upserts), unavailable=tuple(unavailable),
                          added=tuple(added), updated=tuple(updated))


# -- the factory's side ----------------------------------------------------------------


class DiscoveryState:
    """Per-factory discovery bookkeeping (hosts probed in this process, the last report)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.probed: set[str] = set()
        self.last_report: DiscoveryReport | None = None
        self.suppress_startup = False


def state_of(factory: LLMFactory) -> DiscoveryState:
    """The factory's :class:`DiscoveryState`, created on first use."""
    state = getattr(factory, "_discovery", None)
    if not isinstance(state, DiscoveryState):
        state = DiscoveryState()
        factory._discovery = state
    return state


_TRUE = {"1", "true", "yes", "on"}


def discovery_enabled(factory: LLMFactory) -> bool:
    """Whether start-up and on-demand discovery may touch the network for ``factory``."""
    if factory.discover is not None:
        return bool(factory.discover)
    settings = factory.settings
    if settings.env.get("LLMFACTORY_NO_DISCOVER", "").strip().lower() in _TRUE:
        return False
    return settings.discovery.enabled


def options_for(factory: LLMFactory, mdns: bool | None = None) -> ProbeOptions:
    """The :class:`ProbeOptions` the factory's settings call for."""
    from llmfactory.runtimes.mdns import interfaces_from_env

    settings = factory.settings
    d = settings.discovery
    interfaces = interfaces_from_env(settings.env)
    return ProbeOptions(
        connect_timeout=d.connect_timeout,
        deadline=d.deadline,
        mdns=d.mdns if mdns is None else bool(mdns),
        mdns_timeout=d.mdns_timeout,
        mdns_interfaces=tuple(interfaces) if interfaces else None,
    )


def _in_event_loop() -> bool:
    import sys

    if "asyncio" in sys.modules:
        import asyncio

        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            pass
    try:
        import sniffio

        sniffio.current_async_library()
        return True
    except Exception:
        return False


def run_sync(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``func(*args)`` to completion from synchronous code.

    Directly with :func:`anyio.run` when no event loop runs in this thread;
    in a short-lived worker thread with its own loop when one does (calling
    ``anyio.run`` there would fail).
    """
    if not _in_event_loop():
        return anyio.run(func, *args)
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(anyio.run(func, *args))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="llmfactory-discovery", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _as_host(item: Host | str | tuple[str, str]) -> Host:
    if isinstance(item, Host):
        return item
    if isinstance(item, tuple):
        runtime, url = item
        return host_from_url(runtime, url, source="explicit")
    named, url = split_runtime_url(item)
    return host_from_url(named or _runtime_for_port(url), url, source="explicit")


def _runtime_for_port(url: str) -> str:
    """The runtime a bare URL most likely is, from its port (else ``openai_compatible``)."""
    from llmfactory.identifiers import parse_host

    port = parse_host(url, default_port=DEFAULT_LOCAL_HOSTS["ollama"])[1].port
    for runtime, default in DEFAULT_LOCAL_HOSTS.items():
        if port == default:
            return runtime
    return "openai_compatible"


@dataclass(slots=True)
class _Plan:
    hosts: list[Host]
    options: ProbeOptions
    warnings: list[str]
    known: dict[str, LLMModel]
    env: Mapping[str, str]


def _plan(
    factory: LLMFactory,
    hosts: Iterable[Host | str | tuple[str, str]] | None,
    mdns: bool | None,
) -> _Plan:
    settings = factory.settings
    warnings: list[str] = list(plugin_errors())
    if hosts is None:
        planned, problems = configured_hosts(settings, factory.store.load_hosts())
        warnings += problems
    else:
        planned = dedupe([_as_host(h) for h in hosts])
    known = {m.identifier: m for m in factory.list_models() if m.host is not None}
    return _Plan(planned, options_for(factory, mdns), warnings, known, settings.env)


def _apply(
    factory: LLMFactory,
    plan: _Plan,
    outcomes: list[HostOutcome],
    problems: list[str],
    started: datetime,
    t0: float,
    *,
    record_failed: bool = True,
) -> DiscoveryReport:
    """Write the outcomes into the registry; return the report."""
    from llmfactory.runtimes.hosts import host_record

    changes = reconcile(outcomes, plan.known.values())
    store = factory.store
    if changes.unavailable:
        store.set_availability(list(changes.unavailable), False)
    if changes.upserts:
        factory.add_models(changes.upserts)
    if changes.unavailable:
        factory.reload()
    previous = {r.key: r for r in store.load_hosts()}
    now = datetime.now(timezone.utc)
    records: list[HostRecord] = []
    for outcome in outcomes:
        report = outcome.report
        if report.status != "ok" and not record_failed and report.key not in previous:
            continue
        old = previous.get(report.key)
        host = outcome.host
        if old is not None and old.source in PERSISTENT_SOURCES:
            host = replace(host, source=old.source)
        record = host_record(host, old)
        record.status = report.status
        record.last_checked = now
        record.last_error = report.error
        if report.status == "ok":
            record.version = report.version
            record.model_count = report.model_count
            record.last_seen = now
        records.append(record)
    if records:
        store.upsert_hosts(records)
    state = state_of(factory)
    with state.lock:
        state.probed.update(o.host.key for o in outcomes)
    result = DiscoveryReport(
        hosts=tuple(o.report for o in outcomes),
        added=changes.added,
        updated=changes.updated,
        unavailable=changes.unavailable,
        warnings=tuple(plan.warnings + problems),
        elapsed=time.perf_counter() - t0,
        started_at=started,
    )
    state.last_report = result
    for warning in result.warnings:
        logger.warning("%s", warning)
    logger.info("discovery: %s", result.summary())
    return result


def initialize_without_discovery(factory: LLMFactory) -> None:
    """Initialise the factory without its start-up discovery (a full refresh follows)."""
    if factory.initialized:
        return
    state = state_of(factory)
    state.suppress_startup = True
    try:
        factory.ensure_initialized()
    finally:
        state.suppress_startup = False


def _initialize(factory: LLMFactory, full: bool) -> None:
    # A full refresh replaces the start-up probe; any other first use runs it.
    if full:
        initialize_without_discovery(factory)
    else:
        factory.ensure_initialized()


def factory_refresh(
    factory: LLMFactory,
    hosts: Iterable[Host | str | tuple[str, str]] | None = None,
    mdns: bool | None = None,
    *,
    on_status: StatusCallback | None = None,
    record_failed: bool = True,
) -> DiscoveryReport:
    """Probe (again) and reconcile, synchronously; see :meth:`LLMFactory.refresh`."""
    _initialize(factory, full=hosts is None)
    plan = _plan(factory, hosts, mdns)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    if not plan.hosts and not plan.options.mdns:
        outcomes: list[HostOutcome] = []
        problems: list[str] = []
    else:
        outcomes, problems = run_sync(_probe_plan, plan, on_status)
    return _apply(factory, plan, outcomes, problems, started, t0, record_failed=record_failed)


async def factory_arefresh(
    factory: LLMFactory,
    hosts: Iterable[Host | str | tuple[str, str]] | None = None,
    mdns: bool | None = None,
    *,
    on_status: StatusCallback | None = None,
) -> DiscoveryReport:
    """Probe (again) and reconcile from async code; see :meth:`LLMFactory.arefresh`."""
    if not factory.initialized:
        await anyio.to_thread.run_sync(_initialize, factory, hosts is None)
    plan = await anyio.to_thread.run_sync(_plan, factory, hosts, mdns)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    outcomes: list[HostOutcome] = []
    problems: list[str] = []
    if plan.hosts or plan.options.mdns:
        outcomes, problems = await _probe_plan(plan, on_status)

    def apply() -> DiscoveryReport:
        return _apply(factory, plan, outcomes, problems, started, t0)

    return await anyio.to_thread.run_sync(apply)


async def _probe_plan(
    plan: _Plan, on_status: StatusCallback | None
) -> tuple[list[HostOutcome], list[str]]:
    return await probe_hosts(plan.hosts, plan.options, known=plan.known, env=plan.env,
                             on_status=on_status)


def discover_at_startup(factory: LLMFactory) -> DiscoveryReport | None:
    """The start-up probe (from ``ensure_initialized``); problems are logged, never raised."""
    state = state_of(factory)
    if state.suppress_startup or not discovery_enabled(factory):
        return None
    try:
        return factory_refresh(factory)
    except LLMFactoryError as exc:
        logger.warning("start-up discovery failed: %s", exc)
    except Exception:  # the registry must stay usable whatever discovery met
        logger.warning("start-up discovery failed unexpectedly", exc_info=True)
    return None


def probe_unknown(factory: LLMFactory, parsed: ModelIdentifier) -> LLMModel | None:
    """Probe the host an identifier names, when it is not known yet; return the model if found.

    Used by ``get_model`` / ``create_llm``; does nothing when discovery is
    disabled, the runtime is unknown, or the host was probed or is known already.
    """
    if parsed.runtime is None or parsed.host is None or not discovery_enabled(factory):
        return None
    key = f"{parsed.runtime}@{parsed.host}"
    state = state_of(factory)
    with state.lock:
        if key in state.probed:
            return None
        if factory.list_models(runtime=parsed.runtime, host=parsed.host):
            return None
        try:
            get_runtime(parsed.runtime)
            host = host_from_url(parsed.runtime, parsed.host, source="identifier")
        except (LLMFactoryError, ValueError):
            return None
        state.probed.add(key)
        factory_refresh(factory, [host], mdns=False, record_failed=False)
    return _find(factory, parsed)


def _find(factory: LLMFactory, parsed: ModelIdentifier) -> LLMModel | None:
    names = {parsed.model}
    if parsed.runtime == "ollama" and ":" not in parsed.model.rsplit("/", 1)[-1]:
        names.add(f"{parsed.model}:latest")
    for model in factory.list_models(runtime=parsed.runtime, host=parsed.host):
        if model.name in names:
            return model
    return None


def factory_add_host(
    factory: LLMFactory, runtime: str, url: str, *, probe: bool = True
) -> HostRecord:
    """Remember a host (source ``user``) and, unless ``probe`` is false, probe it now."""
    from llmfactory.runtimes.hosts import host_record

    runtime = runtime.strip().lower()
    get_runtime(runtime)  # unknown runtime: ConfigError listing the known ones
    host = host_from_url(runtime, url, source="user")
    factory.ensure_initialized()
    store = factory.store
    previous = {r.key: r for r in store.load_hosts()}
    store.upsert_hosts([host_record(host, previous.get(host.key))])
    if probe:
        factory_refresh(factory, [host], mdns=False)
    return next(r for r in store.load_hosts() if r.key == host.key)


def factory_remove_host(factory: LLMFactory, runtime: str, url: str) -> bool:
    """Forget a stored host; True when it was stored. Its models stay in the registry."""
    host = host_from_url(runtime, url)
    factory.ensure_initialized()
    return factory.store.delete_host(host.runtime, str(host.address))


def factory_hosts(factory: LLMFactory) -> list[HostRecord]:
    """Every stored host plus configured ones not probed yet (status ``unknown``), sorted."""
    from llmfactory.runtimes.hosts import host_record

    factory.ensure_initialized()
    records = {r.key: r for r in factory.store.load_hosts()}
    configured, _ = configured_hosts(factory.settings, records.values())
    for host in configured:
        if host.key not in records:
            records[host.key] = host_record(host)
    return sorted(records.values(), key=lambda r: (r.runtime, r.address))


# -- module-level shortcuts over the shared factory --------------------------------------


def _shared() -> LLMFactory:
    from llmfactory.factory import LLMFactory

    return LLMFactory.instance()


def refresh(
    hosts: Iterable[Host | str | tuple[str, str]] | None = None,
    mdns: bool | None = None,
) -> DiscoveryReport:
    """:meth:`LLMFactory.refresh` on the process-wide factory."""
    return factory_refresh(_shared(), hosts, mdns)


async def arefresh(
    hosts: Iterable[Host | str | tuple[str, str]] | None = None,
    mdns: bool | None = None,
) -> DiscoveryReport:
    """:meth:`LLMFactory.arefresh` on the process-wide factory."""
    return await factory_arefresh(_shared(), hosts, mdns)


def add_host(runtime: str, url: str, *, probe: bool = True) -> HostRecord:
    """:meth:`LLMFactory.add_host` on the process-wide factory."""
    return factory_add_host(_shared(), runtime, url, probe=probe)


def remove_host(runtime: str, url: str) -> bool:
    """:meth:`LLMFactory.remove_host` on the process-wide factory."""
    return factory_remove_host(_shared(), runtime, url)


def list_hosts() -> list[HostRecord]:
    """:meth:`LLMFactory.hosts` on the process-wide factory."""
    return factory_hosts(_shared())
