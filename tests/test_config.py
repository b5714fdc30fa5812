"""Settings from the environment and the config file; LLMConfig layering."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfactory import ConfigError, LLMConfig, Settings


def test_home_puts_everything_in_one_directory(home: Path) -> None:
    settings = Settings.load()
    assert settings.data_dir == home
    assert settings.config_file == home / "config.toml"
    assert settings.database_url == f"sqlite:///{home / 'registry.db'}"
    assert settings.database_path == home / "registry.db"


def test_env_overrides(tmp_path: Path) -> None:
    settings = Settings.load(
        {
            "LLMFACTORY_HOME": str(tmp_path),
            "LLMFACTORY_DATABASE_URL": "sqlite://",
            "LLMFACTORY_CONFIG": str(tmp_path / "other.toml"),
        }
    )
    assert settings.database_url == "sqlite://" and settings.database_url_from_env
    assert settings.database_path is None
    assert settings.config_file == tmp_path / "other.toml"


def test_full_config_file(home: Path) -> None:
    (home / "config.toml").write_text(
        """
[discovery]
mdns = true
connect_timeout = 0.25
deadline = 2

[[hosts]]
runtime = "ollama"
url = "http://gpu-box:11434"

[pricing."gpt-4o"]
input = 2
output = 8

[api_keys]
openai = "sk-test"

[base_urls]
openai = "http://127.0.0.1:9/v1"

[extensions]
enabled = ["my-ext"]

[defaults]
temperature = 0.2
stop = "END"
"""
    )
    os.chmod(home / "config.toml", 0o600)
    s = Settings.load()
    assert s.discovery.mdns and s.discovery.connect_timeout == 0.25 and s.discovery.deadline == 2
    assert s.hosts[0].runtime == "ollama" and s.hosts[0].url == "http://gpu-box:11434"
    assert s.pricing["gpt-4o"].input == 2.0
    assert s.api_keys["openai"] == "sk-test"
    assert "sk-test" not in repr(s)
    assert s.extensions == ("my-ext",)
    assert s.defaults.temperature == 0.2 and s.defaults.stop == ("END",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[discovery\n", "not valid TOML"),
        ("[colours]\nred = 1\n", "unknown section"),
        ("[discovery]\ndeadline = -1\n", "must be > 0"),
        ("[discovery]\nmdns = 'yes'\n", "must be a bool"),
        ("[discovery]\nturbo = true\n", "unknown \\[discovery\\] key"),
        ("[[hosts]]\nruntime = 'ollama'\n", "exactly the keys runtime and url"),
        ("[pricing.gpt]\ninput = -1\n", "must be >= 0"),
        ("[pricing.gpt]\nin = 1\n", "unknown key"),
        ("[defaults]\ntemperatur = 1\n", "unknown setting"),
    ],
)
def test_bad_config_files_say_what_is_wrong(home: Path, text: str, message: str) -> None:
    (home / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        Settings.load()
    assert str(home / "config.toml") in str(info.value)


def test_readable_config_with_keys_warns(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = home / "config.toml"
    path.write_text('[api_keys]\nopenai = "sk-secret-value"\n')
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="llmfactory.config"):
        Settings.load()
    assert "chmod 600" in caplog.text
    assert "sk-secret-value" not in caplog.text


def test_llmconfig_layers() -> None:
    base = LLMConfig(temperature=0.7, max_tokens=100, options={"num_ctx": 2048})
    top = LLMConfig(temperature=0.1, options={"top_k": 5})
    merged = base.merged(top)
    assert merged.temperature == 0.1 and merged.max_tokens == 100
    assert merged.options == {"num_ctx": 2048, "top_k": 5}
    assert base.merged(None) is base
    assert "sk-" not in repr(LLMConfig(api_key="sk-hidden"))


@given(st.text(max_size=200))
def test_config_parser_only_raises_config_errors(text: str) -> None:
    from llmfactory.config import Settings as S

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    with contextlib.suppress(ConfigError):
        S._from_raw(raw, where="fuzz", data_dir=Path("."), config_dir=Path("."),
                    config_file=Path("fuzz.toml"), database_url="sqlite://")
