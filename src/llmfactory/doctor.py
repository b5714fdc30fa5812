"""Health checks of an installation, and repair of a broken registry.

``llmfactory doctor`` runs :func:`run_checks`; ``llmfactory doctor --repair``
runs :func:`repair_store`, which moves a broken registry file aside (it never
deletes one) and builds a fresh one from the catalogue and a discovery of the
configured hosts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from llmfactory.config import Settings
from llmfactory.errors import ConfigError, StoreError

__all__ = ["Check", "RepairResult", "repair_store", "run_checks"]

#: The environment variables holding API keys, by service.
API_KEY_VARS: Mapping[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "groq": "GROQ_API_KEY",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One finding: ``status`` is ``ok``, ``warning`` or ``error``; ``fix`` says what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready form."""
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairResult:
    """What :func:`repair_store` did."""

    repaired: bool
    moved: list[Path] = field(default_factory=list)
    detail: str = ""


def _check_config(settings_or_error: Settings | ConfigError, path: Path) -> list[Check]:
    if isinstance(settings_or_error, ConfigError):
        return [Check(name="config", status="error", detail=str(settings_or_error),
                      fix=f"fix or move aside {path}")]
    checks = [
        Check(
            name="config",
            status="ok",
            detail=f"{path} " + ("parsed" if path.exists() else "absent (defaults apply)"),
        )
    ]
    if path.exists() and settings_or_error.api_keys and os.name == "posix":
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            checks.append(Check(name="config permissions", status="warning",
                                detail=f"{path} holds API keys and others can read it",
                                fix=f"chmod 600 {path}"))
    return checks


def _check_store(url: str) -> list[Check]:
    from llmfactory.registry.migrations import SCHEMA_VERSION
    from llmfactory.registry.store import Store

    try:
        store = Store(url, create_dirs=False)
    except StoreError as exc:
        return [Check(name="registry", status="error", detail=str(exc),
                      fix="run `llmfactory doctor --repair` (moves the file aside, never "
                          "deletes it)")]
    try:
        result = store.integrity_check()
        version = store.schema_version()
        models = len(store.load_models())
        hosts = store.load_hosts()
    except StoreError as exc:
        return [Check(name="registry", status="error", detail=str(exc),
                      fix="run `llmfactory doctor --repair`")]
    finally:
        store.close()
    checks = []
    if result != "ok":
        checks.append(Check(name="registry", status="error",
                            detail=f"integrity check failed: {result}",
                            fix="run `llmfactory doctor --repair`"))
    else:
        checks.append(Check(name="registry", status="ok",
                            detail=f"schema {version}/{SCHEMA_VERSION}, {models} models, "
                                   f"{len(hosts)} hosts, integrity ok"))
    for host in hosts:
        if host.status not in ("ok", "unknown"):
            checks.append(Check(
                name=f"host {host.key}", status="warning",
                detail=f"{host.status}" + (f": {host.last_error}" if host.last_error else ""),
                fix="start the runtime, or `llmfactory hosts remove` it",
            ))
    return checks


def _check_keys(settings: Settings | None, env: Mapping[str, str]) -> list[Check]:
    configured = set(settings.api_keys) if settings is not None else set()
    found = [s for s, var in API_KEY_VARS.items() if env.get(var) or s in configured]
    missing = [var for s, var in API_KEY_VARS.items() if s not in found]
    detail = "keys for: " + (", ".join(found) if found else "none")
    return [Check(name="api keys", status="ok", detail=detail,
                  fix=("set " + ", ".join(missing) + " to use those services") if missing else "")]


def run_checks(env: Mapping[str, str] | None = None) -> list[Check]:
    """Check the config file, the registry (and its recorded hosts) and the API keys.

    Never prints or returns a key's value.
    """
    env = dict(os.environ if env is None else env)
    from llmfactory.config import default_paths

    _, config_dir = default_paths(env)
    path = Path(env.get("LLMFACTORY_CONFIG") or config_dir / "config.toml")
    try:
        settings: Settings | ConfigError = Settings.load(env)
    except ConfigError as exc:
        settings = exc
    checks = _check_config(settings, path)
    if isinstance(settings, Settings):
        db_path = settings.database_path
        if db_path is not None and not db_path.exists():
            checks.append(Check(name="registry", status="ok",
                                detail=f"{db_path} not created yet (it is created on first use)"))
        else:
            checks += _check_store(settings.database_url)
        checks += _check_keys(settings, env)
    else:
        checks += _check_keys(None, env)
    return checks


def repair_store(settings: Settings, *, discover: bool = True) -> RepairResult:
    """Move a broken registry file aside and create a fresh one; a healthy one is left alone.

    The fresh registry gets the built-in catalogue and, unless ``discover`` is false
    (or discovery is turned off in the settings), what the configured hosts serve.
    """
    from llmfactory.registry.store import Store

    path = settings.database_path
    try:
        store = Store(settings.database_url, create_dirs=True)
        healthy = store.integrity_check() == "ok"
        store.close()
        if healthy:
            return RepairResult(repaired=False, detail="the registry is healthy; nothing to do")
    except StoreError as exc:
        reason = str(exc)
        if "permission" in reason or "readonly" in reason or "read-only" in reason:
            raise StoreError(
                f"{reason}. This is a permission problem, not a broken file, so it was "
                "left as it is",
                path=exc.path,
            ) from exc
    else:
        reason = "integrity check failed"
    if path is None:
        raise StoreError(
            f"cannot repair {settings.database_url} automatically ({reason}); only SQLite "
            "registry files can be moved aside",
            path=None,
        )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    suffixes = ("", "-wal", "-shm")
    aside = f"{path}.broken-{stamp}"
    attempt = 1
    while any(Path(aside + suffix).exists() for suffix in suffixes):
        attempt += 1  # repaired twice within a second: never overwrite an earlier copy
        aside = f"{path}.broken-{stamp}-{attempt}"
    moved = []
    for suffix in suffixes:
        source = Path(str(path) + suffix)
        if source.exists():
            target = Path(aside + suffix)
            source.rename(target)
            moved.append(target)
    from llmfactory.factory import LLMFactory

    fresh = LLMFactory(settings=settings, database_url=settings.database_url,
                       discover=None if discover else False)
    fresh.ensure_initialized()  # the catalogue, then start-up discovery
    sources = [m.source for m in fresh.list_models()]
    report = fresh.last_discovery
    fresh.close()
    if report is None:
        found = "discovery was off: local models come back at the next discovery"
    else:
        found = (f"{sources.count('discovered')} models discovered on {len(report.ok)} of "
                 f"{len(report.hosts)} hosts")
    return RepairResult(
        repaired=True,
        moved=moved,
        detail=f"moved the broken registry aside ({reason}); the fresh one holds "
        f"{sources.count('builtin')} catalogue models; {found}",
    )
