"""Identifiers: parsing, formatting, host normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfactory import InvalidIdentifierError, ModelIdentifier, normalize_host, parse_identifier
from llmfactory.identifiers import format_identifier, parse_host


@pytest.mark.parametrize(
    ("text", "model", "runtime", "host"),
    [
        ("llama3:latest:ollama@localhost:11434", "llama3:latest", "ollama", "localhost:11434"),
        ("llama3:ollama@localhost", "llama3", "ollama", "localhost:11434"),
        ("qwen/qwen3-4b:lmstudio@127.0.0.1:1234", "qwen/qwen3-4b", "lmstudio", "127.0.0.1:1234"),
        ("qwen/qwen3-4b@q4_k_m:lmstudio@[::1]:1234", "qwen/qwen3-4b@q4_k_m", "lmstudio",
         "[::1]:1234"),
        ("qwen/qwen3-4b:lmstudio@::1", "qwen/qwen3-4b", "lmstudio", "[::1]:1234"),
        ("m:ollama@http://LocalHost:11434/", "m", "ollama", "localhost:11434"),
        ("m:ollama@https://gpu.example.com", "m", "ollama", "gpu.example.com:443"),
        ("m:OLLAMA@GPU-box", "m", "ollama", "gpu-box:11434"),
        ("hf.co/org/model:Q4_K_M:ollama@10.0.0.2:8080", "hf.co/org/model:Q4_K_M", "ollama",
         "10.0.0.2:8080"),
        ("m:ollama@[0:0:0:0:0:0:0:1]:11434", "m", "ollama", "[::1]:11434"),
    ],
)
def test_parse_runtime_identifiers(text: str, model: str, runtime: str, host: str) -> None:
    parsed = parse_identifier(text)
    assert parsed == ModelIdentifier(model, runtime, host)
    assert not parsed.is_cloud
    assert str(parsed) == f"{model}:{runtime}@{host}"


@pytest.mark.parametrize("name", ["gpt-4o", "claude-sonnet-4-5", "openai/gpt-oss-120b",
                                  "ft:gpt-4o:org:custom"])
def test_parse_cloud_names(name: str) -> None:
    parsed = parse_identifier(name)
    assert parsed.is_cloud
    assert parsed.model == name
    assert parsed.host is None and parsed.address is None
    assert format_identifier(parsed) == name


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("", "model"),
        ("   ", "model"),
        ("model@localhost", "runtime"),
        (":ollama@localhost", "model"),
        ("m:ollama@", "host"),
        ("m:Bad Runtime@localhost", "runtime"),
        ("m:ollama@localhost:99999", "port"),
        ("m:ollama@localhost:abc", "port"),
        ("m:ollama@[::1", "host"),
        ("m:ollama@ftp://host", "host"),
        ("m:ollama@host/path", "host"),
        ("m:ollama@bad_host!", "host"),
        ("m:custom@somehost", "port"),  # no default port known for an unknown runtime
        ("bad\nname", "model"),
    ],
)
def test_malformed_identifiers_name_the_part(text: str, part: str) -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        parse_identifier(text)
    assert info.value.part == part
    assert "expected" in str(info.value)


def test_invalid_identifier_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="runtime is missing"):
        parse_identifier("llama3@localhost")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://LocalHost:11434/", "localhost:11434"),
        ("localhost", "localhost:11434"),
        ("[::1]", "[::1]:11434"),
        ("::1", "[::1]:11434"),
        ("[::1]:1337", "[::1]:1337"),
        ('"1.2.3.4"', "1.2.3.4:11434"),
        (":1234", "127.0.0.1:1234"),
        ("http://1.2.3.4", "1.2.3.4:80"),
        ("https://1.2.3.4", "1.2.3.4:443"),
    ],
)
def test_normalize_host(text: str, expected: str) -> None:
    assert normalize_host(text, runtime="ollama") == expected


def test_parse_host_keeps_scheme_and_path() -> None:
    scheme, address, path = parse_host("https://example.com/ollama/", runtime="ollama")
    assert (scheme, str(address), path) == ("https", "example.com:443", "/ollama")
    assert address.url(scheme, path) == "https://example.com:443/ollama"


# -- property: format and parse are exact inverses ----------------------------------

_model_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
)
_runtimes = st.sampled_from(["ollama", "lmstudio", "openai_compatible", "my-runtime", "vllm.x"])
_hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9\-]{0,20}(\.[a-z][a-z0-9\-]{0,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
_ports = st.integers(min_value=1, max_value=65535)


@given(model=_model_names, runtime=_runtimes, host=_hosts, port=_ports)
def test_roundtrip_runtime_identifiers(model: str, runtime: str, host: str, port: int) -> None:
    text = f"{model}:{runtime}@{host}:{port}"
    parsed = parse_identifier(text)
    assert parsed.model == model
    assert parsed.runtime == runtime
    assert format_identifier(parsed) == text
    assert parse_identifier(format_identifier(parsed)) == parsed


@given(name=_model_names.filter(lambda s: "@" not in s))
def test_roundtrip_cloud_names(name: str) -> None:
    assert format_identifier(parse_identifier(name)) == name


@given(text=st.text(max_size=60))
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        parsed = parse_identifier(text)
    except InvalidIdentifierError:
        return
    assert parse_identifier(format_identifier(parsed)) == parsed
