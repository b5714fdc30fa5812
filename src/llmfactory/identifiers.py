"""Model identifiers and host strings: parse, format, normalise.

An identifier names one model at one place:

* ``model:runtime@host`` for a model served by a runtime, e.g.
  ``llama3:latest:ollama@localhost:11434`` or ``qwen/qwen3-4b:lmstudio@[::1]:1234``;
* a bare name for a cloud API model, e.g. ``gpt-4o``.

Parsing splits at the last ``@`` (the host), then at the last ``:`` before it
(the runtime); the model name keeps its own ``:``, ``/`` and ``@``. Parsing
and formatting are exact inverses for canonical identifiers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from llmfactory.errors import InvalidIdentifierError

__all__ = [
    "DEFAULT_PORTS",
    "EXPECTED_FORM",
    "HostAddress",
    "ModelIdentifier",
    "format_identifier",
    "normalize_host",
    "parse_host",
    "parse_identifier",
    "register_default_port",
]

EXPECTED_FORM = (
    "expected 'model:runtime@host[:port]' (e.g. 'llama3:latest:ollama@localhost:11434') "
    "or a bare cloud model name (e.g. 'gpt-4o')"
)

#: Default port per runtime, used when a host string has none. Runtimes from
#: plugins add theirs with :func:`register_default_port`.
DEFAULT_PORTS: dict[str, int] = {
    "ollama": 11434,
    "lmstudio": 1234,
    "openai_compatible": 8000,
    "mock": 1,  # nominal: the mock runtime serves scripted models without a network
}

_RUNTIME_RE = re.compile(r"^[a-z][a-z0-9_.\-]*$")
# \Z, not $: "$" also matches before a final newline ("gpu\n" is not a host name).
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}\Z)[a-z0-9_](?:[a-z0-9_\-]{0,62})(?:\.[a-z0-9_\-]{1,63})*\.?\Z"
)
_FORBIDDEN_IN_NAME = re.compile(r"[\x00-\x1f\x7f]")


def register_default_port(runtime: str, port: int) -> None:
    """Record the default port of a runtime (used by runtime plugins)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1..65535")
    DEFAULT_PORTS[runtime] = port


@dataclass(frozen=True, slots=True, order=True)
class HostAddress:
    """A normalised network address: lower-case host (IPv6 without brackets) and port."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        """True when ``host`` is an IPv6 literal."""
        return ":" in self.host

    def __str__(self) -> str:
        if self.is_ipv6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def url(self, scheme: str = "http", path: str = "") -> str:
        """The base URL, e.g. ``http://[::1]:11434``."""
        return f"{scheme}://{self}{path}"


def _host_error(text: str, why: str, part: str = "host") -> InvalidIdentifierError:
    return InvalidIdentifierError(
        f"invalid host {text!r}: {why}; expected 'host[:port]', '[ipv6]:port' or "
        "'http://host:port'",
        text=text,
        part=part,
    )


def parse_host(
    text: str, *, runtime: str | None = None, default_port: int | None = None
) -> tuple[str, HostAddress, str]:
    """Parse a host string as users write it; return ``(scheme, address, path)``.

    Accepts ``host``, ``host:port``, ``[ipv6]:port``, a bare IPv6 literal and
    URLs with ``http``/``https`` schemes and an optional path (returned without
    a trailing slash). A missing port is the scheme's (80/443) when a scheme is
    given, else ``default_port``, else the runtime's default.
    """
    original = text
    text = text.strip().strip("\"'").strip()
    if not text:
        raise _host_error(original, "it is empty")
    scheme = "http"
    explicit_scheme = False
    if "://" in text:
        scheme, _, text = text.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise _host_error(original, f"unsupported scheme {scheme!r} (use http or https)")
        explicit_scheme = True
    path = ""
    # The path starts at the first "/" (IPv6 literals never contain one).
    if "/" in text:
        text, slash, rest = text.partition("/")
        path = (slash + rest).rstrip("/")
    if "?" in path or "#" in path or "?" in text or "#" in text:
        raise _host_error(original, "a query or fragment is not allowed")
    host: str
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _host_error(original, "unclosed '[' in IPv6 address")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise _host_error(original, f"unexpected {rest!r} after IPv6 address")
            port_text = rest[1:]
    elif text.count(":") >= 2:
        host = text  # bare IPv6 literal without a port
    elif ":" in text:
        host, _, port_text = text.partition(":")
    else:
        host = text
    host = host.lower()
    if "%" in host:
        raise _host_error(original, "IPv6 zone indexes are not supported")
    if ":" in host:
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise _host_error(original, f"{host!r} is not a valid IPv6 address") from None
    elif not host:
        # ":1234" means this machine, as it does to Ollama's clients.
        host = "127.0.0.1"
    elif not _HOSTNAME_RE.match(host):
        raise _host_error(original, f"{host!r} is not a valid host name or address")
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii():
            raise _host_error(original, f"port {port_text!r} is not a number", "port")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise _host_error(original, f"port {port} is out of range 1..65535", "port")
    elif explicit_scheme:
        port = 443 if scheme == "https" else 80
    elif default_port is not None:
        port = default_port
    elif runtime is not None and runtime in DEFAULT_PORTS:
        port = DEFAULT_PORTS[runtime]
    else:
        raise _host_error(
            original, "no port given and no default port is known for this runtime", "port"
        )
    return scheme, HostAddress(host.rstrip(".") or host, port), path


def normalize_host(text: str, *, runtime: str | None = None) -> str:
    """Normalise a host string to ``host:port`` (``http://LocalHost:11434/`` → ``localhost:11434``).

    A path is refused here: identifiers name a host, not an URL.
    """
    _, address, path = parse_host(text, runtime=runtime)
    if path:
        raise _host_error(text, f"a path ({path!r}) is not allowed in an identifier's host")
    return str(address)


@dataclass(frozen=True, slots=True)
class ModelIdentifier:
    """A parsed identifier: ``model`` plus, for runtime-served models, ``runtime`` and ``host``."""

    model: str
    runtime: str | None = None
    host: str | None = None

    @property
    def is_cloud(self) -> bool:
        """True for a bare cloud model name (no runtime, no host)."""
        return self.runtime is None

    @property
    def address(self) -> HostAddress | None:
        """The host as a :class:`HostAddress`, or None for cloud models."""
        if self.host is None:
            return None
        return parse_host(self.host, runtime=self.runtime)[1]

    def __str__(self) -> str:
        return format_identifier(self)


def _check_model_name(model: str, text: str) -> None:
    if not model or not model.strip():
        raise InvalidIdentifierError(
            f"invalid identifier {text!r}: the model part is empty; {EXPECTED_FORM}",
            text=text,
            part="model",
        )
    if model != model.strip() or _FORBIDDEN_IN_NAME.search(model):
        raise InvalidIdentifierError(
            f"invalid identifier {text!r}: the model part has surrounding whitespace or "
            f"control characters; {EXPECTED_FORM}",
            text=text,
            part="model",
        )


def parse_identifier(text: str) -> ModelIdentifier:
    """Parse an identifier, normalising its runtime and host.

    Raises :class:`InvalidIdentifierError` naming the malformed part.
    """
    if not isinstance(text, str):
        raise InvalidIdentifierError(
            f"an identifier must be a string, not {type(text).__name__}", part="model"
        )
    if "@" not in text:
        _check_model_name(text, text)
        return ModelIdentifier(text)
    head, _, host_text = text.rpartition("@")
    if ":" not in head:
        raise InvalidIdentifierError(
            f"invalid identifier {text!r}: the runtime is missing before '@'; {EXPECTED_FORM}",
            text=text,
            part="runtime",
        )
    model, _, runtime = head.rpartition(":")
    runtime = runtime.strip().lower()
    if not _RUNTIME_RE.match(runtime):
        raise InvalidIdentifierError(
            f"invalid identifier {text!r}: runtime {runtime!r} must be a lower-case word such as "
            f"'ollama', 'lmstudio' or 'openai_compatible'; {EXPECTED_FORM}",
            text=text,
            part="runtime",
        )
    _check_model_name(model, text)
    if not host_text.strip():
        raise InvalidIdentifierError(
            f"invalid identifier {text!r}: the host after '@' is empty; {EXPECTED_FORM}",
            text=text,
            part="host",
        )
    try:
        host = normalize_host(host_text, runtime=runtime)
    except InvalidIdentifierError as exc:
        raise InvalidIdentifierError(
            f"invalid identifier {text!r}: {exc}", text=text, part=exc.part
        ) from None
    return ModelIdentifier(model, runtime, host)


def format_identifier(identifier: ModelIdentifier) -> str:
    """Format an identifier; the exact inverse of :func:`parse_identifier`."""
    if identifier.runtime is None:
        return identifier.model
    return f"{identifier.model}:{identifier.runtime}@{identifier.host}"
