"""Where to look for runtimes: defaults, the environment, the config file, code.

The hosts a discovery probes, first source first (a host named twice is
probed once):

1. hosts added with :meth:`LLMFactory.add_host` / ``llmfactory hosts add``
   (persisted in the registry, source ``user``), and hosts that answered an
   on-demand probe for an identifier naming them (source ``identifier``);
2. ``[[hosts]]`` entries of the config file (``runtime``, ``url``);
3. ``LLMFACTORY_HOSTS``: comma-separated ``runtime=url`` pairs;
4. each runtime's env var: ``OLLAMA_HOST`` and ``LMSTUDIO_HOST``, read the way
   Ollama reads ``OLLAMA_HOST`` (see :func:`parse_runtime_env`);
5. the default local ports, 127.0.0.1:11434 (Ollama) and 127.0.0.1:1234 (LM
   Studio), for each runtime whose env var is not set — unless
   ``LLMFACTORY_NO_DEFAULT_HOSTS=1`` or ``discovery.defaults = false``.

A bind-all address (``0.0.0.0``, ``::``) or an empty host means this machine
and is probed on loopback. A ``/v1`` at the end of a URL is dropped (the
runtimes' API paths are appended to the host's root).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from llmfactory.errors import ConfigError, InvalidIdentifierError
from llmfactory.identifiers import DEFAULT_PORTS, HostAddress, parse_host
from llmfactory.runtimes.base import Host

if TYPE_CHECKING:
    from llmfactory.config import Settings
    from llmfactory.registry.models import HostRecord

__all__ = [
    "DEFAULT_LOCAL_HOSTS",
    "ENV_VARS",
    "configured_hosts",
    "connectable",
    "host_from_record",
    "host_from_url",
    "host_record",
    "parse_hosts_env",
    "parse_runtime_env",
    "split_runtime_url",
]

#: The runtimes probed on this machine by default, and their ports.
DEFAULT_LOCAL_HOSTS: dict[str, int] = {"ollama": 11434, "lmstudio": 1234}

#: Runtime → the env var that points at it.
ENV_VARS: dict[str, str] = {"ollama": "OLLAMA_HOST", "lmstudio": "LMSTUDIO_HOST"}

_TRUE = {"1", "true", "yes", "on"}
_GO_INT = re.compile(r"^[+-]?[0-9]+$")
# Sources of stored hosts that every discovery probes again.
PERSISTENT_SOURCES = ("user", "identifier")


def _go_split_host_port(hostport: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``: raise ValueError where Go returns an error."""
    i = hostport.rfind(":")
    if i < 0:
        raise ValueError("missing port")
    j = k = 0
    if hostport[0] == "[":
        end = hostport.find("]")
        if end < 0:
            raise ValueError("missing ']'")
        if end + 1 == len(hostport):
            raise ValueError("missing port")
        if end + 1 != i:
            raise ValueError("too many colons" if hostport[end + 1] == ":" else "missing port")
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            raise ValueError("too many colons")
    if "[" in hostport[j:]:
        raise ValueError("unexpected '['")
    if "]" in hostport[k:]:
        raise ValueError("unexpected ']'")
    return host, hostport[i + 1 :]


def _go_parse_ip(text: str) -> str | None:
    """Go's ``net.ParseIP(text).String()``, or None when Go would return nil."""
    if "%" in text or not text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def connectable(host: str) -> str:
    """The address a client connects to for a host as written.

    ``0.0.0.0`` → ``127.0.0.1``, ``::`` → ``::1`` (bind-all addresses name this
    machine, as Ollama's ``ConnectableHost`` does), and an empty host → ``127.0.0.1``.
    """
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _address(host: str, port: int, where: str) -> HostAddress:
    shown = f"[{host}]" if ":" in host else host
    try:
        return parse_host(f"{shown}:{port}")[1]
    except InvalidIdentifierError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_runtime_env(
    value: str, *, default_port: int, name: str = "OLLAMA_HOST", runtime: str = "ollama"
) -> tuple[str, HostAddress, str]:
    """Read a host env var the way Ollama reads ``OLLAMA_HOST``; return ``(scheme, address, path)``.

    The rules of Ollama's ``envconfig.Host`` and ``ConnectableHost``: surrounding
    whitespace and quotes are dropped; no scheme means ``http`` and the default
    port; ``http://host`` means port 80 and ``https://host`` 443; a path after
    the host is kept; a port that is not a number in 0..65535 falls back to the
    default; an IPv6 address may come with or without brackets; ``ollama.com``
    alone means ``https://ollama.com:443`` (Ollama only); ``0.0.0.0``, ``::``
    and an empty host mean this machine. Raises
    :class:`~llmfactory.errors.ConfigError` for what cannot be probed (another
    scheme, an invalid host name, port 0).
    """
    where = f"{name}={value!r}"
    s = value.strip().strip("\"'").strip()
    default = str(default_port)
    scheme, sep, hostport = s.partition("://")
    if not sep:
        scheme, hostport = "http", s
        if runtime == "ollama" and s == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default = "80"
    elif scheme == "https":
        default = "443"
    hostport, _, path = hostport.partition("/")
    try:
        host, port_text = _go_split_host_port(hostport)
    except ValueError:
        host, port_text = "127.0.0.1", default
        ip = _go_parse_ip(hostport.strip("[]"))
        if ip is not None:
            host = ip
        elif hostport:
            host = hostport
    port = int(port_text) if _GO_INT.match(port_text) else -1
    if not -(2**31) <= port < 2**31 or not 0 <= port <= 65535:
        port = int(default)
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"{where}: unsupported scheme {scheme!r}; use http:// or https://")
    if port == 0:
        raise ConfigError(f"{where}: port 0 cannot be connected to; give the runtime's port")
    ip = _go_parse_ip(host)
    address = _address(connectable(ip if ip is not None else host.lower()), port, where)
    return scheme, address, _clean_path("/" + path if path else "")


def _clean_path(path: str) -> str:
    path = path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return path


def host_from_url(runtime: str, url: str, *, source: str = "user") -> Host:
    """A :class:`Host` from what a user wrote: ``host``, ``host:port``, ``[ipv6]:port``, a URL.

    A missing port is the scheme's (``http://host`` → 80) or else the
    runtime's default. Raises :class:`~llmfactory.errors.InvalidIdentifierError`
    (a ValueError) for a malformed host.
    """
    runtime = runtime.strip().lower()
    default = DEFAULT_PORTS.get(runtime)
    if default is None:
        from llmfactory.runtimes.base import get_runtime

        default = int(get_runtime(runtime).default_port)
    scheme, address, path = parse_host(url, runtime=runtime, default_port=default)
    host = connectable(address.host)
    if host != address.host:
        address = HostAddress(host, address.port)
    return Host(runtime=runtime, address=address, scheme=scheme, path=_clean_path(path),
                source=source)


def split_runtime_url(text: str) -> tuple[str | None, str]:
    """Split ``runtime=url`` (as in ``LLMFACTORY_HOSTS``); the runtime is None without ``=``."""
    runtime, sep, url = text.partition("=")
    if not sep:
        return None, text.strip()
    return runtime.strip().lower(), url.strip()


def parse_hosts_env(value: str, *, source: str = "env") -> tuple[list[Host], list[str]]:
    """Parse ``LLMFACTORY_HOSTS`` (``ollama=http://a:11434,lmstudio=b``); return hosts, problems."""
    hosts: list[Host] = []
    problems: list[str] = []
    for part in value.split(","):
        if not part.strip():
            continue
        runtime, url = split_runtime_url(part)
        if runtime is None or not url:
            problems.append(
                f"LLMFACTORY_HOSTS: {part.strip()!r} is not 'runtime=url' "
                "(e.g. ollama=http://gpu-box:11434); skipped"
            )
            continue
        try:
            hosts.append(host_from_url(runtime, url, source=source))
        except (ConfigError, InvalidIdentifierError) as exc:
            problems.append(f"LLMFACTORY_HOSTS: {exc}; skipped")
    return hosts, problems


def host_from_record(record: HostRecord) -> Host:
    """The :class:`Host` a stored :class:`~llmfactory.registry.models.HostRecord` names."""
    address = parse_host(record.address, runtime=record.runtime,
                         default_port=DEFAULT_PORTS.get(record.runtime, 80))[1]
    return Host(runtime=record.runtime, address=address, scheme=record.scheme,
                path=record.path, source=record.source)


def host_record(host: Host, previous: HostRecord | None = None) -> HostRecord:
    """A new :class:`~llmfactory.registry.models.HostRecord` for ``host`` (status kept from
    ``previous``)."""
    from llmfactory.registry.models import HostRecord

    record = HostRecord(runtime=host.runtime, address=str(host.address), scheme=host.scheme,
                        path=host.path, source=host.source)
    if previous is not None:
        for name in ("status", "version", "model_count", "last_seen", "last_checked",
                     "last_error"):
            setattr(record, name, getattr(previous, name))
    return record


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def configured_hosts(
    settings: Settings,
    stored: Iterable[HostRecord] = (),
    *,
    env: Mapping[str, str] | None = None,
) -> tuple[list[Host], list[str]]:
    """Every host a discovery should probe, first source first; return hosts and problems.

    ``stored`` are the registry's host records (those added by the user or
    named by an identifier are probed); ``env`` defaults to the settings' environment.
    """
    env = settings.env if env is None else env
    problems: list[str] = []
    found: list[Host] = []
    for record in stored:
        if record.source in PERSISTENT_SOURCES:
            try:
                found.append(host_from_record(record))
            except (ConfigError, InvalidIdentifierError) as exc:
                problems.append(f"stored host {record.key}: {exc}; skipped")
    for entry in settings.hosts:
        try:
            found.append(host_from_url(entry.runtime, entry.url, source=entry.source))
        except (ConfigError, InvalidIdentifierError) as exc:
            problems.append(f"{settings.config_file}: [[hosts]] {entry.url!r}: {exc}; skipped")
    hosts_env = env.get("LLMFACTORY_HOSTS")
    if hosts_env:
        parsed, bad = parse_hosts_env(hosts_env)
        found += parsed
        problems += bad
    for runtime, var in ENV_VARS.items():
        value = env.get(var)
        if value is None or not value.strip().strip("\"'").strip():
            continue
        try:
            scheme, address, path = parse_runtime_env(
                value, default_port=DEFAULT_LOCAL_HOSTS[runtime], name=var, runtime=runtime
            )
        except ConfigError as exc:
            problems.append(f"{exc}; skipped")
            continue
        found.append(Host(runtime=runtime, address=address, scheme=scheme, path=path,
                          source="env"))
    if settings.discovery.defaults and not _truthy(env.get("LLMFACTORY_NO_DEFAULT_HOSTS")):
        for runtime, port in DEFAULT_LOCAL_HOSTS.items():
            value = env.get(ENV_VARS[runtime])
            if value is not None and value.strip().strip("\"'").strip():
                continue  # the env var replaces the default, as it does for the runtime
            found.append(Host(runtime=runtime, address=HostAddress("127.0.0.1", port),
                              source="default"))
    return dedupe(found), problems


def dedupe(hosts: Sequence[Host]) -> list[Host]:
    """``hosts`` without repeats (same runtime and address); the first one named wins."""
    seen: set[str] = set()
    result: list[Host] = []
    for host in hosts:
        if host.key not in seen:
            seen.add(host.key)
            result.append(host)
    return result
