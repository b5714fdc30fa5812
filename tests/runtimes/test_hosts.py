"""Where llmfactory looks: OLLAMA_HOST parsing (Ollama's own rules), env, config, code."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfactory.config import HostSetting, Settings
from llmfactory.errors import ConfigError, InvalidIdentifierError
from llmfactory.registry.models import HostRecord
from llmfactory.runtimes.hosts import (
    configured_hosts,
    connectable,
    host_from_url,
    parse_hosts_env,
    parse_runtime_env,
)


def _ollama(value: str) -> str:
    scheme, address, path = parse_runtime_env(value, default_port=11434)
    return f"{scheme}://{address}{path}"


# Ollama's envconfig TestHost table, with ConnectableHost applied (0.0.0.0 → 127.0.0.1,
# :: → ::1, an empty host → 127.0.0.1).
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "http://127.0.0.1:11434"),
        ("1.2.3.4", "http://1.2.3.4:11434"),
        (":1234", "http://127.0.0.1:1234"),
        ("1.2.3.4:1234", "http://1.2.3.4:1234"),
        ("example.com", "http://example.com:11434"),
        ("example.com:1234", "http://example.com:1234"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:1234", "http://127.0.0.1:1234"),
        ("[::1]", "http://[::1]:11434"),
        ("::1", "http://[::1]:11434"),
        ("[::]", "http://[::1]:11434"),
        ("::", "http://[::1]:11434"),
        ("[::1]:1337", "http://[::1]:1337"),
        ('"1.2.3.4"', "http://1.2.3.4:11434"),
        ("'1.2.3.4'", "http://1.2.3.4:11434"),
        ("  1.2.3.4  ", "http://1.2.3.4:11434"),
        ("http://1.2.3.4", "http://1.2.3.4:80"),
        ("http://1.2.3.4:4321", "http://1.2.3.4:4321"),
        ("https://1.2.3.4", "https://1.2.3.4:443"),
        ("https://example.com/ollama", "https://example.com:443/ollama"),
        ("https://example.com/ollama/", "https://example.com:443/ollama"),
        ("ollama.com", "https://ollama.com:443"),
        (":66000", "http://127.0.0.1:11434"),
        (":-1", "http://127.0.0.1:11434"),
        ("example.com:abc", "http://example.com:11434"),
        ("example.com:", "http://example.com:11434"),
        ("Example.COM", "http://example.com:11434"),
        ("::ffff:1.2.3.4", "http://1.2.3.4:11434"),
        ("[::1", "http://[::1]:11434"),  # Go's ParseIP(Trim(hostport, "[]")) accepts it
        ("http://gpu-box:11434/v1", "http://gpu-box:11434"),
    ],
)
def test_ollama_host_rules(value: str, expected: str) -> None:
    assert _ollama(value) == expected


@pytest.mark.parametrize("value", ["ftp://example.com", "a b", "example.com:0", "exa$mple.com"])
def test_ollama_host_that_cannot_be_probed(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        _ollama(value)
    assert "OLLAMA_HOST" in str(info.value)


_hostnames = st.from_regex(r"\A[a-z][a-z0-9\-]{0,10}(\.[a-z][a-z0-9]{0,5}){0,2}\Z")
_ipv4 = st.tuples(*[st.integers(1, 254)] * 4).map(lambda t: ".".join(map(str, t)))
_ipv6 = st.sampled_from(["::1", "fe80::1", "2001:db8::8a2e:370:7334", "::"])


@given(
    host=st.one_of(_hostnames, _ipv4, _ipv6, st.sampled_from(["0.0.0.0", ""])),
    scheme=st.sampled_from([None, "http", "https"]),
    port=st.one_of(st.none(), st.integers(1, 65535), st.sampled_from([-1, 65536, 99999])),
    path=st.sampled_from(["", "/ollama", "/a/b/"]),
    brackets=st.booleans(),
    quote=st.sampled_from(["", '"', "'"]),
    space=st.sampled_from(["", " ", "\t"]),
)
def test_ollama_host_property(
    host: str,
    scheme: str | None,
    port: int | None,
    path: str,
    brackets: bool,
    quote: str,
    space: str,
) -> None:
    """Whatever form the value takes, the parse agrees with Ollama's rules."""
    if host == "" and port is None:
        return  # "" alone is the unset value; covered by the table
    if host == "ollama.com":
        return  # special-cased by Ollama
    ipv6 = ":" in host
    shown = f"[{host}]" if ipv6 and (brackets or port is not None) else host
    text = shown + (f":{port}" if port is not None else "") + path
    if scheme:
        text = f"{scheme}://{text}"
    text = f"{space}{quote}{text}{quote}{space}"
    got_scheme, address, got_path = parse_runtime_env(text, default_port=11434)
    default = {"http": 80, "https": 443, None: 11434}[scheme]
    expected_port = port if port is not None and 0 <= port <= 65535 else default
    expected_host = connectable("::" if host == "::" else host)
    assert got_scheme == (scheme or "http")
    assert address.port == expected_port
    assert address.host == expected_host
    assert got_path == path.rstrip("/")


@given(st.text(max_size=40))
def test_ollama_host_never_fails_otherwise(text: str) -> None:
    """Any string either parses or raises ConfigError; nothing else escapes."""
    try:
        scheme, address, _ = parse_runtime_env(text, default_port=11434)
    except ConfigError:
        return
    assert scheme in ("http", "https")
    assert 1 <= address.port <= 65535


def test_host_from_url_forms() -> None:
    h = host_from_url("ollama", "gpu-box")
    assert (h.runtime, str(h.address), h.scheme, h.path) == ("ollama", "gpu-box:11434", "http", "")
    assert str(host_from_url("lmstudio", "localhost").address) == "localhost:1234"
    assert str(host_from_url("openai_compatible", "vllm").address) == "vllm:8000"
    assert str(host_from_url("ollama", "http://gpu-box").address) == "gpu-box:80"
    assert str(host_from_url("ollama", "0.0.0.0:11434").address) == "127.0.0.1:11434"
    assert str(host_from_url("ollama", "[::]:1").address) == "[::1]:1"
    v1 = host_from_url("openai_compatible", "http://box:8080/v1/")
    assert (v1.base_url, v1.path) == ("http://box:8080", "")
    prefixed = host_from_url("ollama", "https://proxy/ollama")
    assert prefixed.base_url == "https://proxy:443/ollama"
    with pytest.raises(InvalidIdentifierError):
        host_from_url("ollama", "http://bad host")
    with pytest.raises(ConfigError, match="unknown runtime"):
        host_from_url("nosuchruntime", "box")


def test_llmfactory_hosts_env() -> None:
    hosts, problems = parse_hosts_env(
        " ollama=http://a:11434 , lmstudio=b,openai_compatible=http://c:8080/v1,, bare-url, "
        "ollama=http://bad host"
    )
    assert [h.key for h in hosts] == ["ollama@a:11434", "lmstudio@b:1234",
                                      "openai_compatible@c:8080"]
    assert all(h.source == "env" for h in hosts)
    assert len(problems) == 2
    assert "bare-url" in problems[0] and "runtime=url" in problems[0]


def _settings(tmp_path: Path, env: dict[str, str], **changes: object) -> Settings:
    base = Settings.load({"LLMFACTORY_HOME": str(tmp_path)})
    from dataclasses import replace

    return replace(base, env=env, **changes)  # type: ignore[arg-type]


def test_defaults_and_what_replaces_them(tmp_path: Path) -> None:
    hosts, problems = configured_hosts(_settings(tmp_path, {}))
    assert [h.key for h in hosts] == ["ollama@127.0.0.1:11434", "lmstudio@127.0.0.1:1234"]
    assert {h.source for h in hosts} == {"default"} and not problems

    hosts, _ = configured_hosts(_settings(tmp_path, {"LLMFACTORY_NO_DEFAULT_HOSTS": "1"}))
    assert hosts == []

    env = {"OLLAMA_HOST": "0.0.0.0:5555", "LMSTUDIO_HOST": "http://studio"}
    hosts, _ = configured_hosts(_settings(tmp_path, env))
    assert [(h.key, h.source) for h in hosts] == [
        ("ollama@127.0.0.1:5555", "env"), ("lmstudio@studio:80", "env")]


def test_every_source_in_order_without_repeats(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        {"LLMFACTORY_NO_DEFAULT_HOSTS": "1", "OLLAMA_HOST": "gpu:11434",
         "LLMFACTORY_HOSTS": "ollama=gpu:11434,lmstudio=studio:1234", "LMSTUDIO_HOST": "ftp://x"},
        hosts=(HostSetting(runtime="ollama", url="http://cfg:11434"),
               HostSetting(runtime="ollama", url="http://bad host")),
    )
    stored = [
        HostRecord(runtime="ollama", address="added:11434", source="user"),
        HostRecord(runtime="ollama", address="seen:11434", source="mdns"),
        HostRecord(runtime="ollama", address="named:11434", source="identifier"),
    ]
    hosts, problems = configured_hosts(settings, stored)
    assert [(h.key, h.source) for h in hosts] == [
        ("ollama@added:11434", "user"),
        ("ollama@named:11434", "identifier"),
        ("ollama@cfg:11434", "config"),
        ("ollama@gpu:11434", "env"),
        ("lmstudio@studio:1234", "env"),
    ]
    assert len(problems) == 2
    assert any("LMSTUDIO_HOST" in p and "scheme" in p for p in problems)
    assert any("[[hosts]]" in p for p in problems)


def test_config_can_turn_defaults_off(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[discovery]\ndefaults = false\n[[hosts]]\nruntime = "ollama"\nurl = "gpu"\n'
    )
    settings = Settings.load({"LLMFACTORY_HOME": str(tmp_path)})
    hosts, _ = configured_hosts(settings)
    assert [h.key for h in hosts] == ["ollama@gpu:11434"]
