"""Discovery of 100 loopback hosts: 90 Ollama servers with 20 models each, 10 black holes.

One server process (:mod:`benchmarks.server`) runs the 90 Ollama-protocol
servers (``/api/version``, ``/api/tags``, ``/api/show``, all pre-encoded) on
their own ports, and 10 ports that accept connections and never answer — the
worst kind of dead host, since the TCP connect succeeds and only the deadline
ends the wait. Each repetition runs in a fresh client process with a fresh
registry and an explicit ``[discovery]`` configuration (connect timeout 0.5 s,
deadline 3 s):

* **all 100 hosts**: ``factory.refresh(hosts)``, the whole run (probes and the
  registry writes) against the deadline;
* **digest cache**: the 90 live hosts discovered once (every model described
  with ``/api/show``), then again with nothing changed (only ``/api/tags``:
  the digests match the registry, so nothing is described again).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Result
from benchmarks.server import ServerProcess

LIVE = 90
MODELS = 20
BLACKHOLES = 10
DEADLINE = 3.0
CONNECT_TIMEOUT = 0.5
REPEAT = 3


def worker(ports: list[int], blackholes: list[int]) -> None:
    """One repetition in this (fresh) process; prints a JSON line."""
    from llmfactory import LLMFactory

    live = [f"ollama=http://127.0.0.1:{p}" for p in ports]
    dead = [f"ollama=http://127.0.0.1:{p}" for p in blackholes]
    out: dict[str, Any] = {}

    factory = LLMFactory(discover=False)
    factory.ensure_initialized()
    start = time.perf_counter()
    report = factory.refresh(live + dead, mdns=False)
    out["all"] = time.perf_counter() - start
    out["all_ok"] = len(report.ok)
    out["all_unreachable"] = len(report.unreachable)
    out["all_models"] = len(report.added)
    factory.close()

    # The digest cache: a second registry (so nothing is known), the live hosts twice.
    factory = LLMFactory(database_url=os.environ["BENCH_SECOND_DB"], discover=False)
    factory.ensure_initialized()
    start = time.perf_counter()
    report = factory.refresh(live, mdns=False)
    out["first"] = time.perf_counter() - start
    out["first_models"] = len(report.added)
    start = time.perf_counter()
    report = factory.refresh(live, mdns=False)
    out["second"] = time.perf_counter() - start
    out["second_models"] = len(report.updated)
    factory.close()
    print(json.dumps(out))


def _config(home: Path) -> None:
    (home / "config.toml").write_text(
        f"[discovery]\nconnect_timeout = {CONNECT_TIMEOUT}\ndeadline = {DEADLINE}\n"
        "mdns = false\n",
        encoding="utf-8",
    )


def bench_discovery(repeat: int = REPEAT) -> list[Result]:
    """Total time against the deadline, and the digest cache's speed-up."""
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    with ServerProcess("hosts", "--ollama", str(LIVE), "--models", str(MODELS),
                       "--blackholes", str(BLACKHOLES)) as info:
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                home = Path(tmp)
                _config(home)
                env = dict(os.environ, LLMFACTORY_HOME=str(home),
                           BENCH_SECOND_DB=f"sqlite:///{home}/second.db")
                env.pop("OLLAMA_HOST", None)
                env.pop("LLMFACTORY_HOSTS", None)
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks.discovery", "worker",
                     json.dumps(info["ollama"]), json.dumps(info["blackholes"])],
                    env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
                )
                if proc.returncode != 0:
                    failures.append((proc.stderr.strip().splitlines() or ["?"])[-1][:300])
                    continue
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if not runs:
        return [Result(bench="discovery", figure="100 hosts", value=0, unit="s", met=False,
                       note="failed: " + "; ".join(failures[:2]))]
    total = statistics.median(r["all"] for r in runs)
    first = statistics.median(r["first"] for r in runs)
    second = statistics.median(r["second"] for r in runs)
    speedup = statistics.median(r["first"] / r["second"] for r in runs)
    found = min(r["all_models"] for r in runs)
    ok = min(r["all_ok"] for r in runs)
    unreachable = min(r["all_unreachable"] for r in runs)
    complete = found == LIVE * MODELS and ok == LIVE and unreachable == BLACKHOLES
    return [
        Result(bench="discovery", figure=f"{LIVE + BLACKHOLES} hosts ({BLACKHOLES} black-holed)",
               value=total, unit="s", target=f"≤ deadline {DEADLINE:g} s + 10 %",
               met=total <= DEADLINE * 1.1 and complete,
               note=f"{total / DEADLINE:.2f}× the deadline; {ok} ok, {unreachable} "
               f"unreachable, {found} models"),
        Result(bench="discovery", figure=f"{LIVE} live hosts, first discovery", value=first,
               unit="s", note=f"{LIVE * MODELS} models described"),
        Result(bench="discovery", figure=f"{LIVE} live hosts, again (digest cache)",
               value=second, unit="s", target="≥ 3× faster than the first",
               met=speedup >= 3, note=f"{speedup:.1f}× faster"),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        worker(json.loads(sys.argv[2]), json.loads(sys.argv[3]))
    else:
        from benchmarks.common import table

        print(table(bench_discovery()))
