"""Import time and cold start."""

from __future__ import annotations

import importlib.util
import os
import tempfile

from benchmarks.common import Result, process_time


def bench_import() -> list[Result]:
    """Whole-process ``import X`` for llmfactory, httpx and the peers that are installed."""
    base = process_time("pass")
    times = {}
    for module in ("llmfactory", "httpx", "openai", "ollama", "litellm"):
        if importlib.util.find_spec(module) is None:
            continue
        times[module] = process_time(f"import {module}", repeat=5 if module == "litellm" else 9)
    results = [Result(bench="import", figure="python -c pass", value=base * 1000, unit="ms")]
    for module, seconds in times.items():
        results.append(Result(bench="import", figure=f"import {module}", value=seconds * 1000,
                              unit="ms", note=f"{(seconds - base) * 1000:.0f} ms over bare python"))
    ours = times["llmfactory"] - base
    results.append(Result(bench="import", figure="llmfactory / httpx (over bare python)",
                          value=ours / (times["httpx"] - base), unit="x", target="≤ 2×",
                          met=ours <= 2 * (times["httpx"] - base)))
    if "litellm" in times:
        ratio = ours / (times["litellm"] - base)
        results.append(Result(bench="import", figure="llmfactory / litellm", value=ratio,
                              unit="x", target="≤ 0.2×", met=ratio <= 0.2))
    return results


def bench_cold_start() -> list[Result]:
    """``ensure_initialized()`` in a fresh process, store on disk, no runtime reachable."""
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ)
        env["LLMFACTORY_HOME"] = home
        env.pop("OLLAMA_HOST", None)
        env.pop("LLMFACTORY_HOSTS", None)
        # The default localhost ports are probed (nothing listens there in the benchmark).
        process_time("import llmfactory; llmfactory.ensure_initialized()", repeat=1, env=env)
        imported = process_time("import llmfactory, llmfactory.factory", env=env)
        started = process_time("import llmfactory; llmfactory.ensure_initialized()", env=env)
    extra = (started - imported) * 1000
    return [
        Result(bench="cold start", figure="import + ensure_initialized()", value=started * 1000,
               unit="ms"),
        Result(bench="cold start", figure="ensure_initialized() beyond import", value=extra,
               unit="ms", target="< 100 ms", met=extra < 100),
    ]
