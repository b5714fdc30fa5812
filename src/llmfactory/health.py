"""Host health: cheap probes, cool-downs after failures, and the host records they update.

Three things live here:

* :class:`HostHealth`, the in-memory view a factory keeps of hosts that failed
  recently (``factory.host_health``): a host whose call failed with a
  connection error or a 5xx is *cooling down* for :attr:`HostHealth.cooldown`
  seconds (30 by default). Replica sets and fallback chains try cooling hosts
  last; a successful call or probe ends the cool-down at once.
* :func:`check_llm` (``await llm.health_check()``): one or two cheap ``GET``
  requests to the model's server (Ollama ``/api/tags`` and ``/api/ps``; an
  OpenAI-compatible server's or a cloud API's ``/models``), reported as a
  :class:`HealthReport`; nothing is generated, no tokens are spent.
* :func:`check_hosts` (``LLMFactory.check_hosts()``, ``llmfactory hosts
  --check``): one cheap request to every known host (Ollama ``/api/version``,
  LM Studio's and OpenAI-compatible servers' ``/v1/models``), concurrently and
  bounded by a timeout, reported as discovery's
  :class:`~llmfactory.runtimes.discovery.HostReport`. Unlike discovery it does
  not list or describe models and changes no model record.

Every outcome updates the host's :class:`~llmfactory.registry.models.HostRecord`
(``status`` ``ok`` / ``unreachable`` / ``error``, ``last_checked``,
``last_error``; ``last_seen`` when it answered) and the factory's
:class:`HostHealth`. Failures during calls are recorded the same way (see
:func:`note_failure`), so ``llmfactory hosts list`` shows a host that failed a
call a moment ago as such.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anyio

from llmfactory.errors import (
    LLMAPIError,
    LLMConnectionError,
    LLMFactoryError,
    RuntimeUnavailableError,
)

if TYPE_CHECKING:
    from llmfactory.base_llm import BaseLLM
    from llmfactory.factory import LLMFactory
    from llmfactory.runtimes.base import Host
    from llmfactory.runtimes.discovery import HostReport

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "DEFAULT_COOLDOWN",
    "Cooldown",
    "HealthReport",
    "HostHealth",
    "aggregate",
    "check_hosts",
    "check_llm",
    "health_key",
    "health_of",
    "is_host_failure",
    "note_failure",
    "note_success",
    "ollama_loaded_names",
]

logger = logging.getLogger("llmfactory.health")

DEFAULT_COOLDOWN = 30.0
"""Seconds a host that failed a call is tried last: 30."""

DEFAULT_CHECK_TIMEOUT = 2.0
"""Seconds a health probe may take, connecting included."""

# The cheapest request that proves a runtime is up, per runtime (host level).
_HOST_PATHS: dict[str, str] = {
    "ollama": "/api/version",
    "lmstudio": "/v1/models",
    "openai_compatible": "/v1/models",
}
# Variables holding a runtime's bearer token (as discovery and the api layer read them).
_TOKEN_VARS: dict[str, tuple[str, ...]] = {
    "lmstudio": ("LMSTUDIO_API_TOKEN", "LM_API_TOKEN"),
    "openai_compatible": ("OPENAI_COMPATIBLE_API_KEY",),
}


# --------------------------------------------------------------------------- in memory


@dataclass(frozen=True, slots=True, kw_only=True)
class Cooldown:
    """A host cooling down: since when, until when (``time.monotonic()``), and why."""

    key: str
    since: float
    until: float
    reason: str

    @property
    def remaining(self) -> float:
        """Seconds left (0 once over)."""
        return max(0.0, self.until - time.monotonic())


class HostHealth:
    """Hosts that failed recently, for one factory (``LLMFactory.host_health``).

    Keys are ``runtime@host:port`` for served models (a
    :class:`~llmfactory.registry.models.HostRecord`'s ``key``) and
    ``api@service`` for cloud services. Thread-safe.
    """

    def __init__(self, cooldown: float = DEFAULT_COOLDOWN) -> None:
        self.cooldown = cooldown
        """Seconds a failed host stays cooling down (set it to change the default)."""
        self._lock = threading.Lock()
        self._cooling: dict[str, Cooldown] = {}

    def mark_unhealthy(self, key: str, reason: str, *, cooldown: float | None = None) -> None:
        """Start (or extend) ``key``'s cool-down: ``cooldown`` seconds, default :attr:`cooldown`."""
        now = time.monotonic()
        seconds = self.cooldown if cooldown is None else max(0.0, cooldown)
        with self._lock:
            previous = self._cooling.get(key)
            since = previous.since if previous is not None and previous.until > now else now
            self._cooling[key] = Cooldown(key=key, since=since, until=now + seconds,
                                          reason=reason)
        logger.info("%s is unhealthy for %.0f s: %s", key, seconds, reason)

    def mark_healthy(self, key: str) -> bool:
        """End ``key``'s cool-down; True when it was unhealthy (cooling or just expired)."""
        with self._lock:
            return self._cooling.pop(key, None) is not None

    def is_cooling_down(self, key: str) -> bool:
        """Whether ``key`` failed less than its cool-down ago."""
        entry = self._cooling.get(key)
        return entry is not None and entry.until > time.monotonic()

    def cooldowns(self) -> dict[str, Cooldown]:
        """The hosts cooling down now, by key."""
        now = time.monotonic()
        with self._lock:
            return {k: v for k, v in self._cooling.items() if v.until > now}

    def clear(self) -> None:
        """Forget every failure."""
        with self._lock:
            self._cooling.clear()

    def __repr__(self) -> str:
        return f"HostHealth(cooldown={self.cooldown:g}, cooling={sorted(self.cooldowns())})"


_PROCESS_HEALTH = HostHealth()
_health_lock = threading.Lock()


def health_of(factory: LLMFactory | None) -> HostHealth:
    """The :class:`HostHealth` of ``factory`` (created on first use); without a factory
    (a conversation built by hand) one shared by the process."""
    if factory is None:
        return _PROCESS_HEALTH
    health = factory._health
    if health is None:
        with _health_lock:
            if factory._health is None:
                factory._health = HostHealth()
            health = factory._health
    assert isinstance(health, HostHealth)
    return health


def health_key(llm: BaseLLM) -> str:
    """Where ``llm`` sends its requests: ``runtime@host:port``, or ``api@service``."""
    model = llm.model
    if model.host is not None:
        return f"{model.runtime}@{model.host}"
    return f"api@{llm.provider}"


def is_host_failure(error: BaseException) -> bool:
    """Whether an error says the *host* is in trouble: no connection, a timeout, or a 5xx
    (after the transport's retries)."""
    if isinstance(error, LLMConnectionError):
        return True
    return isinstance(error, LLMAPIError) and error.status >= 500


def _status_for(error: BaseException) -> str:
    return "unreachable" if isinstance(error, LLMConnectionError) else "error"


async def note_failure(
    llm: BaseLLM, error: BaseException, *, cooldown: float | None = None
) -> bool:
    """Record that a call of ``llm`` failed; True when the host was marked unhealthy.

    Only host failures count (:func:`is_host_failure`); the host cools down
    (``cooldown`` seconds, default :attr:`HostHealth.cooldown`) and its
    record's status becomes ``unreachable`` (no connection) or ``error`` (a 5xx).
    """
    if not is_host_failure(error):
        return False
    factory = llm._factory
    health = health_of(factory)
    health.mark_unhealthy(health_key(llm), _short(error), cooldown=cooldown)
    model = llm.model
    if factory is not None and model.host is not None:
        await _record_async(factory, model.runtime, model.host, _status_for(error), _short(error))
    return True


async def note_success(llm: BaseLLM) -> None:
    """Record that ``llm``'s host answered: its cool-down ends; a host that was unhealthy
    gets its record's status back to ``ok``."""
    factory = llm._factory
    if not health_of(factory).mark_healthy(health_key(llm)):
        return
    model = llm.model
    if factory is not None and model.host is not None:
        await _record_async(factory, model.runtime, model.host, "ok", None)


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 300 else text[:299] + "…"


# --------------------------------------------------------------------------- host records


def _record(
    factory: LLMFactory,
    runtime: str,
    address: str,
    status: str,
    error: str | None,
    version: str | None = None,
) -> None:
    """Update the stored record of ``runtime@address`` (hosts without one are not added)."""
    try:
        with _record_lock:  # one read-modify-write at a time (an in-memory store shares
            _record_locked(factory, runtime, address, status, error, version)  # a connection)
    except LLMFactoryError as exc:  # the registry is closed or unwritable: memory still knows
        logger.debug("cannot record the status of %s@%s: %s", runtime, address, exc)


_record_lock = threading.Lock()


def _record_locked(
    factory: LLMFactory,
    runtime: str,
    address: str,
    status: str,
    error: str | None,
    version: str | None,
) -> None:
    store = factory.store
    record = next(
        (r for r in store.load_hosts() if r.runtime == runtime and r.address == address),
        None,
    )
    if record is None:
        return
    now = datetime.now(timezone.utc)
    record.status = status
    record.last_checked = now
    record.last_error = error
    if status == "ok":
        record.last_seen = now
        if version is not None:
            record.version = version
    store.upsert_hosts([record])


async def _record_async(
    factory: LLMFactory, runtime: str, address: str, status: str, error: str | None
) -> None:
    with anyio.CancelScope(shield=True):  # a cancelled call still leaves its trace
        await anyio.to_thread.run_sync(_record, factory, runtime, address, status, error)


# --------------------------------------------------------------------------- llm.health_check()


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    """What :meth:`~llmfactory.base_llm.BaseLLM.health_check` found.

    ``status`` is ``ok`` (the server answered and lists the model, or cannot
    say), ``missing`` (it answered but does not list the model),
    ``unreachable`` (no connection, or no answer in time) or ``error`` (it
    answered with an error, e.g. 401 or 500, or the key is missing).
    ``loaded`` says whether the model is in memory (Ollama ``/api/ps``; None
    when the runtime does not tell). A replica set or fallback chain reports
    each member in ``members``; it is ``ok`` when one of them is.
    """

    identifier: str
    status: str
    url: str | None = None
    latency_ms: float = 0.0
    error: str | None = None
    listed: bool | None = None
    loaded: bool | None = None
    members: tuple[HealthReport, ...] = ()
    checked_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def ok(self) -> bool:
        """Whether the model can be used now."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "identifier": self.identifier,
            "status": self.status,
            "ok": self.ok,
            "url": self.url,
            "latency_ms": round(self.latency_ms, 3),
            "error": self.error,
            "listed": self.listed,
            "loaded": self.loaded,
            "members": [m.to_dict() for m in self.members],
            "checked_at": self.checked_at.isoformat(),
        }


def aggregate(identifier: str, members: Iterable[HealthReport]) -> HealthReport:
    """One report for a replica set or fallback chain: ``ok`` when a member is."""
    found = tuple(members)
    best = next((m for m in found if m.ok), None) or (found[0] if found else None)
    if best is None:
        return HealthReport(identifier=identifier, status="error", error="no members")
    return HealthReport(
        identifier=identifier,
        status=best.status,
        url=best.url,
        latency_ms=max(m.latency_ms for m in found),
        error=None if best.ok else best.error,
        listed=best.listed,
        loaded=any(m.loaded for m in found) if any(m.loaded is not None for m in found)
        else None,
        members=found,
    )


def _models_path(llm: BaseLLM) -> str:
    """The listing route of ``llm``'s wire protocol, relative to its base URL."""
    declared = getattr(type(llm), "models_path", None)
    if isinstance(declared, str):
        return declared
    if llm.chat_path == "/api/chat":  # Ollama's native API
        return "/api/tags"
    if llm.chat_path == "/v1/messages":  # Anthropic's
        return "/v1/models"
    return "/models"  # OpenAI's dialect: the base URL ends with /v1


def _names(body: Any) -> set[str] | None:
    """Model names in a listing: Ollama ``{"models": [{"name"}]}``, OpenAI/Anthropic
    ``{"data": [{"id"}]}``; None when the shape is unknown."""
    if not isinstance(body, Mapping):
        return None
    items = body.get("models") if "models" in body else body.get("data")
    if not isinstance(items, list):
        return None
    names: set[str] = set()
    for item in items:
        if isinstance(item, Mapping):
            for key in ("name", "model", "id"):
                value = item.get(key)
                if isinstance(value, str):
                    names.add(value)
    return names


async def check_llm(
    llm: BaseLLM, *, timeout: float = DEFAULT_CHECK_TIMEOUT  # noqa: ASYNC109  (per request)
) -> HealthReport:
    """Probe ``llm``'s server cheaply and update its host's health (see the module doc)."""
    from llmfactory.api.transport import NO_RETRY, Timeouts, request_json

    start = time.perf_counter()
    identifier = llm.identifier
    model = llm.model
    url: str | None = None

    def report(status: str, **fields: Any) -> HealthReport:
        return HealthReport(identifier=identifier, status=status, url=url,
                            latency_ms=(time.perf_counter() - start) * 1000.0, **fields)

    timeouts = Timeouts(connect=timeout, read=timeout, write=timeout, pool=timeout)
    try:
        endpoint = llm.endpoint()
        url = endpoint.url(_models_path(llm))
        headers = llm._auth_headers(endpoint)
        with anyio.fail_after(timeout * 2):
            body = await request_json("GET", url, headers=headers, timeouts=timeouts,
                                      retry=NO_RETRY, provider=llm.provider)
            loaded: bool | None = None
            if model.runtime == "ollama" and model.host is not None:
                loaded = await _ollama_loaded(llm, timeouts)
    except TimeoutError:
        error: BaseException = LLMConnectionError(
            f"{url} did not answer within {timeout * 2:g} s", url=url, provider=llm.provider
        )
        await _after_check(llm, error)
        return report("unreachable", error=str(error))
    except (LLMConnectionError, LLMAPIError) as exc:
        await _after_check(llm, exc)
        return report(_status_for(exc), error=_short(exc))
    except LLMFactoryError as exc:  # a missing key, a bad base URL: the host is not at fault
        return report("error", error=_short(exc))
    await _after_check(llm, None)
    names = _names(body)
    wanted = {model.name}
    if model.runtime == "ollama" and ":" not in model.name.rsplit("/", 1)[-1]:
        wanted.add(f"{model.name}:latest")
    listed = None if names is None else bool(wanted & names)
    if listed is False:
        return report("missing", listed=False, loaded=loaded,
                      error=f"{url} does not list {model.name!r}")
    return report("ok", listed=listed, loaded=loaded)


async def _ollama_loaded(llm: BaseLLM, timeouts: Any) -> bool | None:
    """Whether Ollama has ``llm``'s model in memory (``/api/ps``); None when it cannot say."""
    names = await ollama_loaded_names(llm, timeouts)
    if names is None:
        return None
    wanted = {llm.model.name}
    if llm.model.digest:
        wanted.add(llm.model.digest)
    return bool(names & wanted)


async def ollama_loaded_names(llm: BaseLLM, timeouts: Any) -> set[str] | None:
    """Names and digests of the models an Ollama host has loaded (``GET /api/ps``).

    Raises the transport's errors when the host cannot be reached.
    """
    from llmfactory.api.transport import NO_RETRY, request_json

    endpoint = llm.endpoint()
    body = await request_json("GET", endpoint.url("/api/ps"), headers=llm._auth_headers(endpoint),
                              timeouts=timeouts, retry=NO_RETRY, provider=llm.provider)
    if not isinstance(body, Mapping) or not isinstance(body.get("models"), list):
        return None
    names: set[str] = set()
    for item in body["models"]:
        if isinstance(item, Mapping):
            for key in ("name", "model", "digest"):
                value = item.get(key)
                if isinstance(value, str) and value:
                    names.add(value)
    return names


async def _after_check(llm: BaseLLM, error: BaseException | None) -> None:
    factory = llm._factory
    model = llm.model
    if error is None:
        health_of(factory).mark_healthy(health_key(llm))
        status, message = "ok", None
    else:
        if is_host_failure(error):
            health_of(factory).mark_unhealthy(health_key(llm), _short(error))
        status, message = _status_for(error), _short(error)
    if factory is not None and model.host is not None:
        await _record_async(factory, model.runtime, model.host, status, message)


# --------------------------------------------------------------------------- check_hosts()


def _token_headers(runtime: str, env: Mapping[str, str]) -> dict[str, str]:
    for var in _TOKEN_VARS.get(runtime, ()):
        token = env.get(var)
        if token:
            return {"Authorization": f"Bearer {token}"}
    return {}


async def _check_host(
    host: Host, timeout: float, clients: Any, env: Mapping[str, str]  # noqa: ASYNC109
) -> tuple[HostReport, str | None]:
    """Probe one host; the report and the version it told (if any)."""
    from llmfactory.runtimes.base import get_runtime
    from llmfactory.runtimes.discovery import HostReport, _connect_check
    from llmfactory.runtimes.http import ProbeClient

    start = anyio.current_time()

    def report(status: str, **fields: Any) -> HostReport:
        return HostReport(runtime=host.runtime, address=str(host.address),
                          base_url=host.base_url, source=host.source, status=status,
                          elapsed=max(0.0, anyio.current_time() - start), **fields)

    version: str | None = None
    path = _HOST_PATHS.get(host.runtime)
    try:
        with anyio.fail_after(timeout):
            if path is None:
                try:
                    declared = getattr(get_runtime(host.runtime), "health_path", None)
                except LLMFactoryError:
                    declared = None
                path = declared if isinstance(declared, str) else None
            if path is None:  # a plugin runtime without a health route: can we connect?
                await _connect_check(host, timeout)
            else:
                client = ProbeClient(clients.for_host(host), host,
                                     deadline=anyio.current_time() + timeout, env=env)
                body = await client.get_json(path, headers=_token_headers(host.runtime, env))
                if isinstance(body, Mapping) and isinstance(body.get("version"), str):
                    version = str(body["version"])
    except TimeoutError:
        return report("unreachable", error=f"{host.key}: no answer within {timeout:g} s"), None
    except RuntimeUnavailableError as exc:
        return report("unreachable", error=str(exc)), None
    except LLMFactoryError as exc:
        return report("error", error=str(exc)), None
    return report("ok", version=version), version


async def check_hosts(
    factory: LLMFactory,
    hosts: Iterable[Host | str | tuple[str, str]] | None = None,
    *,
    timeout: float = DEFAULT_CHECK_TIMEOUT,  # noqa: ASYNC109  (per host: a result, not an error)
) -> list[HostReport]:
    """Probe hosts cheaply and concurrently; record and return what each said.

    ``hosts`` None checks every known host (``factory.hosts()``: stored and
    configured); otherwise those given, as :meth:`LLMFactory.refresh` takes
    them. Each probe is bounded by ``timeout`` seconds. The results update
    the hosts' records (created for configured hosts not stored yet, as
    discovery does) and :attr:`LLMFactory.host_health`.
    """
    from llmfactory.runtimes.discovery import _as_host
    from llmfactory.runtimes.hosts import host_from_record
    from llmfactory.runtimes.http import HTTPClients

    if hosts is None:
        records = await anyio.to_thread.run_sync(factory.hosts)
        targets: list[Host] = []
        for record in records:
            try:
                targets.append(host_from_record(record))
            except LLMFactoryError as exc:  # pragma: no cover - a record that was valid once
                logger.warning("skipping host %s: %s", record.key, exc)
    else:
        targets = [_as_host(h) for h in hosts]
    env = factory.settings.env
    results: dict[str, tuple[HostReport, str | None]] = {}
    clients = HTTPClients(connect_timeout=timeout, deadline=timeout)

    async def one(host: Host) -> None:
        results[host.key] = await _check_host(host, timeout, clients, env)

    try:
        async with anyio.create_task_group() as tg:
            for host in targets:
                tg.start_soon(one, host)
    finally:
        await clients.aclose()
    reports = [results[h.key] for h in targets if h.key in results]
    health = health_of(factory)
    for report, _ in reports:
        if report.status == "ok":
            health.mark_healthy(report.key)
        elif report.status == "unreachable":
            health.mark_unhealthy(report.key, report.error or "unreachable")
    await anyio.to_thread.run_sync(_write_reports, factory, targets, reports)
    return [r for r, _ in reports]


def _write_reports(
    factory: LLMFactory, targets: list[Host], reports: list[tuple[HostReport, str | None]]
) -> None:
    from llmfactory.runtimes.hosts import PERSISTENT_SOURCES, host_record

    with _record_lock:
        _write_reports_locked(factory, targets, reports, host_record, PERSISTENT_SOURCES)


def _write_reports_locked(
    factory: LLMFactory,
    targets: list[Host],
    reports: list[tuple[HostReport, str | None]],
    host_record: Any,
    persistent: Any,
) -> None:
    store = factory.store
    previous = {r.key: r for r in store.load_hosts()}
    by_key = {h.key: h for h in targets}
    now = datetime.now(timezone.utc)
    records = []
    for report, version in reports:
        old = previous.get(report.key)
        host = by_key[report.key]
        record = host_record(host, old)
        if old is not None and old.source in persistent:
            record.source = old.source
        record.status = report.status
        record.last_checked = now
        record.last_error = report.error
        if report.status == "ok":
            record.last_seen = now
            if version is not None:
                record.version = version
        records.append(record)
    if records:
        store.upsert_hosts(records)
