"""Bad input: every input either parses or raises the documented error, never anything else.

What the rest of the suite already fuzzes (and is not repeated here):

* identifiers — ``tests/test_identifiers.py`` (round trip; any text parses or raises
  :class:`InvalidIdentifierError`);
* ``OLLAMA_HOST`` — ``tests/runtimes/test_hosts.py`` (Ollama's rules; any text
  parses or raises :class:`ConfigError`);
* the config file as text — ``tests/test_config.py``;
* the stream readers over every split of *valid* streams —
  ``tests/api/test_streaming.py``; error bodies of any bytes — same file.

Here: host strings (``parse_host``, ``normalize_host``, ``host_from_url``),
``LLMFACTORY_HOSTS``, the config file as structured TOML (every value of every
type) and as raw bytes, very long and non-ASCII model names through the
registry, odd ports, and the NDJSON / SSE readers over arbitrary bytes.
"""

from __future__ import annotations

import string
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmfactory import ConfigError, InvalidIdentifierError, LLMFactory, parse_identifier
from llmfactory.api.streaming import iter_ndjson, iter_sse, iter_sse_json
from llmfactory.config import LLMConfig, Settings, read_config_file
from llmfactory.errors import LLMAPIError
from llmfactory.identifiers import format_identifier, normalize_host, parse_host
from llmfactory.registry.models import LLMModel
from llmfactory.registry.store import Store
from llmfactory.runtimes.hosts import configured_hosts, host_from_url, parse_hosts_env

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# -- host strings ----------------------------------------------------------------------

_host_alphabet = st.sampled_from(
    [*(string.ascii_letters + string.digits + ":/[]._-@%?#=, \t\n\r\"'"),
     "é", "ß", "\x00", "\u200b", "٣", "０"]
)
_host_like = st.one_of(
    st.text(_host_alphabet, max_size=40),
    st.builds(
        lambda scheme, host, port, path: f"{scheme}{host}{port}{path}",
        st.sampled_from(["", "http://", "https://", "HTTP://", "ftp://", "://"]),
        st.sampled_from(["localhost", "127.0.0.1", "[::1]", "::1", "gpu-box.lan", "", "[::",
                         "a..b", "-x", "x_y", "LOCALHOST.", "[fe80::1%eth0]", "1.2.3.4.5",
                         "gpu\n", " gpu", "gpu\t", "\ngpu"]),
        st.sampled_from(["", ":", ":0", ":1", ":80", ":65535", ":65536", ":99999", ":-1",
                         ":08080", ":1e3", ": 80", ":٣", ":００80"]),
        st.sampled_from(["", "/", "/v1", "/a/b/", "?q=1", "#f"]),
    ),
)
_ports = st.integers(min_value=1, max_value=65535)


def _is_clean_host(host: str) -> bool:
    """A normalised host: lower-case name characters, or an IPv6 address."""
    if ":" in host:
        return all(c in string.hexdigits + ":." for c in host)
    return bool(host) and all(c in string.ascii_lowercase + string.digits + "._-" for c in host)


@FUZZ
@given(text=_host_like, runtime=st.sampled_from([None, "ollama", "lmstudio", "nope"]))
@example(text="gpu\n:80", runtime=None)  # a regex's "$" matches before a final newline
def test_host_strings_parse_or_raise_invalid_identifier(text: str, runtime: str | None) -> None:
    try:
        scheme, address, path = parse_host(text, runtime=runtime)
    except InvalidIdentifierError as exc:
        assert exc.part in ("host", "port"), exc.part
        return
    assert scheme in ("http", "https")
    assert 1 <= address.port <= 65535
    assert _is_clean_host(address.host), address.host
    assert parse_host(str(address), runtime=runtime)[1] == address
    assert path == "" or (path.startswith("/") and not path.endswith("/"))
    try:
        normalized = normalize_host(text, runtime=runtime)
    except InvalidIdentifierError:
        assert path  # only a path is refused in an identifier's host
        return
    assert normalized == str(address) == normalize_host(normalized, runtime=runtime)


@FUZZ
@given(text=_host_like, runtime=st.sampled_from(["ollama", "lmstudio", "openai_compatible"]))
def test_host_from_url_builds_a_probeable_host_or_raises(text: str, runtime: str) -> None:
    try:
        host = host_from_url(runtime, text)
    except (InvalidIdentifierError, ConfigError):
        return
    assert host.base_url.startswith(("http://", "https://"))
    assert _is_clean_host(host.address.host) and 1 <= host.address.port <= 65535
    assert host.address.host not in ("0.0.0.0", "::")  # bind-all means this machine


@FUZZ
@given(st.lists(st.one_of(
    st.builds(lambda r, u: f"{r}={u}", st.sampled_from(["ollama", "LMStudio ", "nope", ""]),
              _host_like),
    _host_like,
), max_size=5).map(",".join))
def test_llmfactory_hosts_never_raises(value: str) -> None:
    hosts, problems = parse_hosts_env(value)
    for host in hosts:
        assert host.runtime in ("ollama", "lmstudio")
        assert _is_clean_host(host.address.host) and 1 <= host.address.port <= 65535
    assert all(p.startswith("LLMFACTORY_HOSTS:") for p in problems)
    settings_ = Settings._from_raw({}, where="fuzz", data_dir=Path("."), config_dir=Path("."),
                                   config_file=Path("fuzz.toml"), database_url="sqlite://")
    env = {"LLMFACTORY_HOSTS": value, "OLLAMA_HOST": value.split(",")[0],
           "LMSTUDIO_HOST": value[::-1]}
    found, _ = configured_hosts(settings_, env=env)  # every source at once: never raises
    assert len({h.key for h in found}) == len(found)


@FUZZ
@given(host=st.sampled_from(["localhost", "127.0.0.1", "[::1]", "gpu-box"]), port=_ports)
def test_odd_ports_round_trip(host: str, port: int) -> None:
    identifier = parse_identifier(f"m:ollama@{host}:{port}")
    assert identifier.address is not None and identifier.address.port == port
    assert format_identifier(identifier).endswith(f":{port}")


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1", "1e3", "٣", "８０", " 80", "80 "])
def test_ports_out_of_range_or_not_ascii_digits_are_refused(port: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        parse_identifier(f"m:ollama@localhost:{port}x" if port.endswith(" ") else
                         f"m:ollama@localhost:{port}")


# -- model names through the registry --------------------------------------------------

_names = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=300),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "模", "🦙", "/", ":", "@"]),
              st.integers(1000, 5000)),
).filter(lambda s: s.strip() == s and s.strip() != "")


@FUZZ
@given(name=_names, port=_ports)
def test_any_model_name_round_trips_through_the_store(name: str, port: int) -> None:
    text = f"{name}:ollama@127.0.0.1:{port}"
    try:
        identifier = parse_identifier(text)
    except InvalidIdentifierError as exc:  # e.g. a name ending in ":" leaves no runtime
        assert exc.part in ("model", "runtime", "host", "port")
        return
    model = LLMModel(identifier=str(identifier), name=identifier.model, runtime="ollama",
                     host=identifier.host, source="user")
    store = Store("sqlite://")
    try:
        store.upsert_models([model])
        (loaded,) = store.load_models()
        assert store.get_model(str(identifier)) == loaded
    finally:
        store.close()
    assert loaded.identifier == str(identifier) and loaded.name == identifier.model
    assert parse_identifier(loaded.identifier) == identifier


def test_long_and_non_ascii_names_through_a_registry_file(home: Path) -> None:
    names = ["模型/千问-7B:Q4_K_M", "🦙" * 2000, "x" * 10_000, "ünïcödé@v2", "a:b:c:d"]
    factory = LLMFactory(discover=False)
    for name in names:
        factory.register_model(f"{name}:ollama@[::1]:65535", context_length=8192)
    factory.close()
    factory = LLMFactory(discover=False)  # read back from the file
    for name in names:
        model = factory.get_model(f"{name}:ollama@[::1]:65535")
        assert model.name == name and model.context_length == 8192
        assert model.host == "[::1]:65535"
    factory.close()


# -- the config file ------------------------------------------------------------------

_toml_scalars = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True),
    st.text(max_size=20), st.datetimes(),
)
_toml_values = st.recursive(
    _toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6,
)
_known_keys = {
    "discovery": ["enabled", "mdns", "connect_timeout", "deadline", "mdns_timeout", "defaults"],
    "hosts": ["runtime", "url"],
    "pricing": ["input", "output", "cached_input"],
    "api_keys": ["openai", "anthropic"],
    "base_urls": ["openai"],
    "extensions": ["enabled"],
    "defaults": ["temperature", "max_tokens", "top_p", "top_k", "stop", "seed",
                 "system_message", "timeout", "connect_timeout", "retries", "pricing",
                 "options", "api_key", "base_url"],
}


@st.composite
def _config_tables(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*_known_keys, "junk"]), max_size=4,
                                 unique=True)):
        keys = _known_keys.get(section, ["x"])
        table = {k: draw(_toml_values) for k in draw(st.lists(st.sampled_from(keys),
                                                              max_size=4, unique=True))}
        if section == "hosts":
            raw[section] = draw(st.sampled_from([[table], table, [table, "x"]]))
        elif section == "pricing":
            raw[section] = {draw(st.text(max_size=6)): table}
        else:
            raw[section] = draw(st.sampled_from([table, draw(_toml_values)]))
    return raw


_TYPES: dict[str, tuple[type, ...]] = {
    "temperature": (float,), "top_p": (float,), "timeout": (float,),
    "connect_timeout": (float,), "max_tokens": (int,), "top_k": (int,), "seed": (int,),
    "retries": (int,), "system_message": (str,), "api_key": (str,), "base_url": (str,),
    "stop": (tuple,), "options": (dict,),
}


@FUZZ
@given(_config_tables())
def test_config_values_of_any_type_give_settings_or_a_config_error(raw: dict[str, Any]) -> None:
    try:
        loaded = Settings._from_raw(raw, where="fuzz.toml", data_dir=Path("."),
                                    config_dir=Path("."), config_file=Path("fuzz.toml"),
                                    database_url="sqlite://")
    except ConfigError as exc:
        assert "fuzz.toml" in str(exc)
        return
    defaults = loaded.defaults
    for name, kinds in _TYPES.items():
        value = getattr(defaults, name)
        assert value is None or (isinstance(value, kinds) and not isinstance(value, bool)), (
            name, value)
    if defaults.stop is not None:
        assert all(isinstance(s, str) for s in defaults.stop)
    if defaults.pricing is not None:
        for value in (defaults.pricing.input, defaults.pricing.output,
                      defaults.pricing.cached_input):
            assert value is None or (isinstance(value, float) and value >= 0)
    for override in loaded.pricing.values():
        assert all(p is None or p >= 0
                   for p in (override.input, override.output, override.cached_input))
    assert all(isinstance(v, str) for v in loaded.api_keys.values())
    d = loaded.discovery
    assert d.deadline > 0 and d.connect_timeout > 0 and d.mdns_timeout > 0


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_config_file_bytes_give_a_table_or_a_config_error(tmp_path_factory: Any,
                                                          data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(data)
    try:
        raw = read_config_file(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(raw, dict)


def test_llmconfig_from_mapping_names_the_bad_value() -> None:
    for bad in ({"temperature": "hot"}, {"max_tokens": 1.5}, {"stop": [1]},
                {"options": "x"}, {"retries": True}, {"pricing": {"input": "free"}}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            LLMConfig.from_mapping(bad, where="[defaults]")
    config = LLMConfig.from_mapping({"temperature": 1, "stop": "END", "timeout": 5})
    assert config.temperature == 1.0 and isinstance(config.temperature, float)
    assert config.stop == ("END",) and config.timeout == 5.0


# -- the stream readers over arbitrary bytes ------------------------------------------

_fragments = st.sampled_from([
    b"\n", b"\r\n", b"\r", b"\n\n", b"data: ", b"data:", b"event: error\n", b"error: ",
    b": ping\n", b"id: 1\n", b"retry: 5\n", b"[DONE]", b'{"a": 1}', b'{"error": "x"}',
    b'{"error": {"type": "rate_limit_error", "message": "slow"}}', b'{"error": null}',
    b"[1, 2]", b'"s"', b"{", b"}", b"\xff\xfe", b"\xe6\xa8", b"\xef\xbb\xbf", b"\x00", b" ",
    b'{"choices": [{"delta": {"content": "hi"}}]}', b"<html>", b"9" * 40,
])
_streams = st.lists(st.one_of(_fragments, st.binary(max_size=12)), max_size=25)


class _Chunks:
    def __init__(self, parts: list[bytes]) -> None:
        self._parts = iter(parts)

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        try:
            return next(self._parts)
        except StopIteration:
            raise StopAsyncIteration from None


def _drain(reader: Callable[..., AsyncIterator[Any]], parts: list[bytes], limit: int) -> list[Any]:
    async def run() -> list[Any]:
        return [item async for item in reader(_Chunks(parts), max_line_bytes=limit)]

    return anyio.run(run)


@FUZZ
@given(parts=_streams, limit=st.sampled_from([8, 64, 16 * 1024 * 1024]),
       reader=st.sampled_from([iter_ndjson, iter_sse, iter_sse_json]))
def test_stream_readers_yield_or_raise_llm_api_errors(
    parts: list[bytes], limit: int, reader: Callable[..., AsyncIterator[Any]]
) -> None:
    try:
        items = _drain(reader, parts, limit)
    except LLMAPIError as exc:  # MalformedResponseError is one; mid-stream errors too
        assert str(exc)
        if reader is iter_sse:
            assert "longer than" in str(exc)  # the only error plain SSE parsing has
        return
    for item in items:
        if reader is iter_ndjson:
            assert isinstance(item, dict) and item.get("error") is None
        elif reader is iter_sse_json:
            name, obj = item
            assert isinstance(obj, dict) and obj.get("error") is None and name != "error"
        else:
            assert isinstance(item.data, str) and item.data
