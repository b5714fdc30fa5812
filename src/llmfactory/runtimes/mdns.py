"""Runtimes on the LAN: browse DNS-SD (mDNS) service types, and announce one.

Neither Ollama nor LM Studio advertises itself over DNS-SD today, so
llmfactory browses service types that someone publishes for them — with
``llmfactory announce``, an Avahi service file, or a sidecar:

* ``_ollama._tcp.local.`` — an Ollama server (the type proposed in
  ollama/ollama#10283); runtime ``ollama``;
* ``_lmstudio._tcp.local.`` — an LM Studio server; runtime ``lmstudio``;
* ``_llmfactory._tcp.local.`` — any runtime; the TXT record's ``runtime`` key
  names it (``openai_compatible`` for llama.cpp's server, vLLM, …);
* the ``service_type`` of any runtime plugin that declares one.

TXT keys (all optional except ``runtime`` on the generic type): ``runtime``,
``version`` (the runtime's version), ``path`` (an API path prefix, e.g.
``/ollama`` behind a proxy), ``scheme`` (``http`` or ``https``) and ``api``
(e.g. ``ollama`` or ``openai``). What is found is a hint: discovery confirms
every service with the runtime's own HTTP probe before registering models.

Browsing uses python-zeroconf's thread-based API from a worker thread, so it
works the same under asyncio and trio; nothing here imports zeroconf until
called. ``LLMFACTORY_MDNS_INTERFACES`` (comma-separated IPv4 addresses, e.g.
``127.0.0.1``) limits the interfaces used; by default all are.
"""

from __future__ import annotations

import logging
import queue
import socket
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmfactory.errors import ConfigError, InvalidIdentifierError
from llmfactory.identifiers import HostAddress, parse_host
from llmfactory.runtimes.base import Host

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

__all__ = [
    "GENERIC_SERVICE_TYPE",
    "SERVICE_TYPES",
    "Announcement",
    "abrowse",
    "browse",
    "interfaces_from_env",
    "service_type_for",
]

logger = logging.getLogger("llmfactory.mdns")

GENERIC_SERVICE_TYPE = "_llmfactory._tcp.local."
"""The generic type: any runtime, named by the TXT key ``runtime``."""

SERVICE_TYPES: dict[str, str] = {
    "ollama": "_ollama._tcp.local.",
    "lmstudio": "_lmstudio._tcp.local.",
}
"""Runtime → its own DNS-SD service type (runtimes without one use the generic type)."""


def interfaces_from_env(env: Mapping[str, str]) -> list[str] | None:
    """The interface addresses named by ``LLMFACTORY_MDNS_INTERFACES`` (None: all)."""
    value = env.get("LLMFACTORY_MDNS_INTERFACES", "").strip()
    if not value:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _type_map() -> dict[str, str | None]:
    """Service type → runtime (None for the generic type: the TXT record says)."""
    types: dict[str, str | None] = {GENERIC_SERVICE_TYPE: None}
    for runtime_name, type_ in SERVICE_TYPES.items():
        types[type_] = runtime_name
    try:
        from llmfactory.runtimes.base import load_runtimes

        for name, plugin in load_runtimes().items():
            declared = getattr(plugin, "service_type", None)
            if isinstance(declared, str) and declared and declared not in types:
                types[declared] = name
    except Exception as exc:  # pragma: no cover - plugin problems are reported elsewhere
        logger.debug("runtime plugins not consulted for service types: %s", exc)
    return types


def service_type_for(runtime: str) -> str:
    """The DNS-SD type ``runtime`` is announced under."""
    if runtime in SERVICE_TYPES:
        return SERVICE_TYPES[runtime]
    for type_, name in _type_map().items():
        if name == runtime:
            return type_
    return GENERIC_SERVICE_TYPE


def _zeroconf(interfaces: Sequence[str] | None) -> Zeroconf:
    from zeroconf import InterfaceChoice, IPVersion, Zeroconf

    if interfaces:
        v4 = all(":" not in i for i in interfaces)
        return Zeroconf(interfaces=list(interfaces),
                        ip_version=IPVersion.V4Only if v4 else IPVersion.All)
    return Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)


def _text(properties: Mapping[bytes, bytes | None], key: str) -> str | None:
    value = properties.get(key.encode())
    if value is None:
        return None
    try:
        return value.decode("utf-8").strip() or None
    except UnicodeDecodeError:
        return None


def _host(info: ServiceInfo, runtime: str | None) -> Host:
    properties = info.properties or {}
    txt_runtime = _text(properties, "runtime")
    runtime = runtime or (txt_runtime.lower() if txt_runtime else None)
    if not runtime:
        raise ConfigError(f"{info.name}: no 'runtime' in its TXT record")
    addresses = info.parsed_addresses()
    if not addresses or not info.port:
        raise ConfigError(f"{info.name}: no address or port")
    ipv4 = [a for a in addresses if ":" not in a]
    address = (ipv4 or addresses)[0]
    scheme = (_text(properties, "scheme") or "http").lower()
    path = _text(properties, "path") or ""
    if path and not path.startswith("/"):
        path = "/" + path
    shown = f"[{address}]" if ":" in address else address
    _, parsed, _ = parse_host(f"{shown}:{info.port}")
    return Host(runtime=runtime, address=HostAddress(parsed.host, parsed.port),
                scheme=scheme if scheme in ("http", "https") else "http",
                path=path.rstrip("/"), source="mdns")


def browse(timeout: float = 2.0, *, interfaces: Sequence[str] | None = None) -> tuple[
    list[Host], list[str]
]:
    """Browse the LAN for ``timeout`` seconds; return the runtime hosts found and problems.

    Blocking: call it from a worker thread (``abrowse`` does). Every Zeroconf
    object it creates is closed before it returns.
    """
    from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange

    types = _type_map()
    events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            events.put((service_type, name))

    hosts: dict[str, Host] = {}
    problems: list[str] = []
    end = time.monotonic() + timeout
    zc = _zeroconf(interfaces)
    try:
        browser = ServiceBrowser(zc, sorted(types), handlers=[on_change])
        try:
            resolved: set[tuple[str, str]] = set()
            while (remaining := end - time.monotonic()) > 0:
                try:
                    service_type, name = events.get(timeout=remaining)
                except queue.Empty:
                    break
                if (service_type, name) in resolved:
                    continue
                info = ServiceInfo(service_type, name)
                wait_ms = max(200.0, min(1000.0, (end - time.monotonic()) * 1000))
                if not info.request(zc, wait_ms):
                    problems.append(f"mDNS: {name} did not resolve")
                    continue
                resolved.add((service_type, name))
                try:
                    host = _host(info, types.get(service_type))
                except (ConfigError, InvalidIdentifierError) as exc:
                    problems.append(f"mDNS: {exc}")
                    continue
                hosts.setdefault(host.key, host)
        finally:
            browser.cancel()
    finally:
        zc.close()
    return list(hosts.values()), problems


async def abrowse(
    timeout: float = 2.0, *, interfaces: Sequence[str] | None = None
) -> tuple[list[Host], list[str]]:
    """:func:`browse` from a worker thread (works under asyncio and trio)."""
    import anyio

    def run() -> tuple[list[Host], list[str]]:
        return browse(timeout, interfaces=interfaces)

    return await anyio.to_thread.run_sync(run)


class Announcement:
    """A runtime on this machine, published over DNS-SD while this object is open.

    ``Announcement("ollama", 11434, version="0.12.6")`` publishes
    ``_ollama._tcp.local.`` with TXT ``runtime=ollama``, ``version=…`` and
    ``path=…``; a runtime without its own type is published under
    :data:`GENERIC_SERVICE_TYPE`. Use it as a context manager, or call
    :meth:`start` and :meth:`close`. ``interfaces`` limits the interfaces
    (and the addresses announced) to the given IPv4 addresses.
    """

    def __init__(
        self,
        runtime: str,
        port: int,
        *,
        version: str | None = None,
        path: str = "",
        name: str | None = None,
        interfaces: Sequence[str] | None = None,
        api: str | None = None,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ConfigError(f"port {port} is out of range 1..65535")
        self.runtime = runtime
        self.port = port
        self.version = version
        self.path = path
        self.interfaces = list(interfaces) if interfaces else None
        self.service_type = service_type_for(runtime)
        hostname = socket.gethostname().split(".")[0] or "localhost"
        self.instance = name or f"{runtime} on {hostname} port {port}"
        self.server = f"{hostname}.local."
        self._zc: Zeroconf | None = None
        self._info: ServiceInfo | None = None

    @property
    def properties(self) -> dict[str, str]:
        """The TXT record published."""
        props = {"runtime": self.runtime, "path": self.path or "/"}
        if self.version:
            props["version"] = self.version
        props["api"] = {"ollama": "ollama", "lmstudio": "lmstudio"}.get(self.runtime, "openai")
        return props

    def _addresses(self) -> list[bytes]:
        if self.interfaces:
            candidates = [i for i in self.interfaces if ":" not in i]
        else:
            from zeroconf import get_all_addresses  # type: ignore[attr-defined]

            candidates = [a for a in get_all_addresses() if not a.startswith("127.")]
            candidates = candidates or ["127.0.0.1"]
        return [socket.inet_aton(a) for a in candidates]

    def start(self) -> Announcement:
        """Register the service (takes about two seconds: mDNS probes for name conflicts)."""
        from zeroconf import ServiceInfo

        if self._zc is not None:
            return self
        info = ServiceInfo(
            self.service_type,
            f"{self.instance}.{self.service_type}",
            addresses=self._addresses(),
            port=self.port,
            properties=self.properties,
            server=self.server,
        )
        zc = _zeroconf(self.interfaces)
        try:
            zc.register_service(info, allow_name_change=True)
        except BaseException:
            zc.close()
            raise
        self._zc, self._info = zc, info
        return self

    @property
    def name(self) -> str:
        """The full service name as registered (it may have changed to avoid a conflict)."""
        return self._info.name if self._info is not None else f"{self.instance}.{self.service_type}"

    def close(self) -> None:
        """Withdraw the announcement and release the sockets."""
        zc, info = self._zc, self._info
        self._zc = self._info = None
        if zc is None:
            return
        try:
            if info is not None:
                zc.unregister_service(info)
        finally:
            zc.close()

    def __enter__(self) -> Announcement:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
