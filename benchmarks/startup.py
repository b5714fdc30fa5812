"""Import time and cold start, each in fresh processes.

``import llmfactory`` is lazy by design (its public names load on first use),
so two import figures are given: the bare ``import llmfactory``, and importing
what a first ``create_llm`` and stream need (the registry, with SQLModel and
SQLAlchemy; the wire protocols, with httpx). The peers are imported whole.

The cold start is ``ensure_initialized()`` in a fresh process with the registry
on disk (created by a previous run) and no runtime listening on the default
ports, timed inside the process, after ``import llmfactory``; it is split into
importing the registry's modules and the rest (opening the store, loading the
in-memory index, probing the default local ports).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

from benchmarks.common import Result, process_time

#: What a first create_llm() and stream import (the peers are imported whole).
FULL_IMPORT = "import llmfactory.factory, llmfactory.api.ollama, llmfactory.api.openai"


def bench_import() -> list[Result]:
    """Whole-process ``import X`` for llmfactory, httpx and the peers that are installed."""
    base = process_time("pass")
    times: dict[str, float] = {}
    for module in ("llmfactory", "httpx", "openai", "ollama", "litellm"):
        if importlib.util.find_spec(module) is None:
            continue
        times[module] = process_time(f"import {module}", repeat=5 if module == "litellm" else 9)
    full = process_time(FULL_IMPORT)
    results = [Result(bench="import", figure="python -c pass", value=base * 1000, unit="ms")]
    for module, seconds in times.items():
        results.append(Result(bench="import", figure=f"import {module}", value=seconds * 1000,
                              unit="ms", note=f"{(seconds - base) * 1000:.0f} ms over bare python"))
    results.append(Result(bench="import", figure="import llmfactory + what create_llm loads",
                          value=full * 1000, unit="ms",
                          note=f"{(full - base) * 1000:.0f} ms over bare python; "
                          "SQLModel/SQLAlchemy, pydantic, httpx"))
    httpx_cost = times["httpx"] - base
    for label, seconds in (("import llmfactory", times["llmfactory"]),
                           ("+ what create_llm loads", full)):
        ours = seconds - base
        results.append(Result(bench="import", figure=f"{label} / import httpx", value=ours /
                              httpx_cost, unit="x", target="≤ 2×", met=ours <= 2 * httpx_cost,
                              note="over bare python"))
        if "litellm" in times:
            ratio = ours / (times["litellm"] - base)
            results.append(Result(bench="import", figure=f"{label} / import litellm",
                                  value=ratio, unit="x", target="≤ 0.2×", met=ratio <= 0.2))
    return results


_COLD = """
import json, time
t0 = time.perf_counter()
import llmfactory
t1 = time.perf_counter()
import llmfactory.factory
t2 = time.perf_counter()
llmfactory.ensure_initialized()
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "modules": t2 - t1, "rest": t3 - t2}))
"""


def _open_default_ports() -> list[int]:
    from llmfactory.runtimes.hosts import DEFAULT_LOCAL_HOSTS

    found = []
    for port in DEFAULT_LOCAL_HOSTS.values():
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                found.append(port)
    return found


def bench_cold_start(repeat: int = 9) -> list[Result]:
    """``ensure_initialized()`` in a fresh process, store on disk, no runtime reachable."""
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ)
        env["LLMFACTORY_HOME"] = home
        for name in ("OLLAMA_HOST", "LMSTUDIO_HOST", "LLMFACTORY_HOSTS",
                     "LLMFACTORY_DATABASE_URL", "LLMFACTORY_CONFIG", "LLMFACTORY_NO_DISCOVER"):
            env.pop(name, None)
        # The first run creates and seeds the registry; the measured ones open it.
        code = "import llmfactory; llmfactory.ensure_initialized()"
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        whole = process_time(code, repeat=repeat, env=env)
        runs = []
        for _ in range(repeat):
            out = subprocess.run([sys.executable, "-c", _COLD], env=env, check=True,
                                 capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
    modules = statistics.median(r["modules"] for r in runs) * 1000
    rest = statistics.median(r["rest"] for r in runs) * 1000
    beyond = statistics.median(r["modules"] + r["rest"] for r in runs) * 1000
    open_ports = _open_default_ports()
    probe_note = ("the default ports were closed" if not open_ports else
                  f"port(s) {', '.join(map(str, open_ports))} were open: their probe is included")
    return [
        Result(bench="cold start", figure="import llmfactory + ensure_initialized(), process",
               value=whole * 1000, unit="ms", note="whole process, interpreter start to exit"),
        Result(bench="cold start", figure="ensure_initialized() beyond import llmfactory",
               value=beyond, unit="ms", target="< 100 ms", met=beyond < 100,
               note=f"{beyond / 100:.1f}× the target; in-process, first call"),
        Result(bench="cold start", figure="  of which: importing the registry's modules",
               value=modules, unit="ms", note="SQLModel, SQLAlchemy, pydantic"),
        Result(bench="cold start", figure="  of which: open store, load index, probe ports",
               value=rest, unit="ms", target="< 100 ms", met=rest < 100, note=probe_note),
    ]
