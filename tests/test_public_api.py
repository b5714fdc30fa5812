"""The public API: __all__ matches what the package exports, and import stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import llmfactory


def test_all_names_resolve() -> None:
    for name in llmfactory.__all__:
        assert getattr(llmfactory, name) is not None, name


def test_all_is_sorted_and_unique() -> None:
    assert list(llmfactory.__all__) == sorted(set(llmfactory.__all__))


def test_every_public_name_is_in_all() -> None:
    import types

    public = {
        n
        for n in dir(llmfactory)
        if not n.startswith("_") and not isinstance(getattr(llmfactory, n), types.ModuleType)
    }
    assert public - {"annotations", "TYPE_CHECKING", "Any"} <= set(llmfactory.__all__)


def test_unknown_attribute() -> None:
    try:
        llmfactory.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_does_no_io_and_loads_no_heavy_module() -> None:
    code = (
        "import sys, json, threading; import llmfactory; "
        "print(json.dumps({'modules': sorted(sys.modules), 'threads': threading.active_count()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    data = json.loads(out)
    heavy = {"sqlmodel", "sqlalchemy", "zeroconf", "rich", "httpx", "pydantic", "click", "anyio"}
    assert heavy.isdisjoint(data["modules"]), heavy & set(data["modules"])
    assert data["threads"] == 1
