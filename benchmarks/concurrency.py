"""1 000 conversations streaming at once from one loopback server.

Each contender runs in a fresh process of its own (so that its peak RSS,
``VmHWM``, is its own): it starts 1 000 streams of 100 chunks each in one
event loop, all at once, against one server process (:mod:`benchmarks.server`),
and reports the wall time from the first request to the last chunk of the last
stream, the CPU time it used meanwhile (less sensitive than the wall time to
other work on the machine), its peak RSS and how many streams failed or came
back short. Repeated 5 times (fresh processes each time, contenders
interleaved); medians are reported.

llmfactory is used as users use it: the model is in the registry (as
discovery would have put it there), ``create_llm`` (default extensions,
including usage tracking into the on-disk registry) makes each conversation —
inside the timed part — then ``stream_user_message``. Raw httpx is one
``AsyncClient`` with httpx's default pool except that it admits the 1 000
connections (the default of 100 would serialise them), reading lines and
parsing JSON.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.common import ROOT, Result
from benchmarks.server import ServerProcess

CONVERSATIONS = 1_000
CHUNKS = 100
REPEAT = 5

#: contender -> (framing, the raw httpx contender it is compared with)
CONTENDERS: dict[str, str] = {
    "raw httpx (NDJSON)": "raw httpx (NDJSON)",
    "llmfactory (Ollama)": "raw httpx (NDJSON)",
    "raw httpx (SSE)": "raw httpx (SSE)",
    "llmfactory (OpenAI-compatible)": "raw httpx (SSE)",
}


def peak_rss_kib() -> int:
    """This process's peak resident set size, KiB.

    ``VmHWM`` from ``/proc/self/status`` where there is one: Linux carries
    ``ru_maxrss`` over ``execve`` from the process that forked, so a child of a
    big benchmark runner would report the runner's size. ``ru_maxrss`` elsewhere.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    peak = peak_rss_kib()
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS counts bytes


def raise_fd_limit(wanted: int = 8192) -> None:
    """Raise the soft limit on open files towards ``wanted`` (1 000 sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _raw(name: str, port: int, n: int, chunks: int) -> tuple[int, int]:
    import anyio
    import httpx

    sse = name == "raw httpx (SSE)"
    url = f"http://127.0.0.1:{port}" + ("/v1/chat/completions" if sse else "/api/chat")
    payload: dict[str, Any] = {"model": f"bench-{chunks}", "stream": True,
                               "messages": [{"role": "user", "content": "Hi"}]}
    loads = json.loads
    failed = short = 0
    # httpx's default pool, except that it admits n connections at once.
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> None:
            nonlocal failed, short
            count = 0
            try:
                async with client.stream("POST", url, json=payload) as r:
                    r.raise_for_status()
                    async for line in r.aiter_lines():
                        if sse:
                            if not line.startswith("data: "):
                                continue
                            if line == "data: [DONE]":
                                break
                            obj = loads(line[6:])
                            if obj["choices"] and obj["choices"][0]["delta"].get("content"):
                                count += 1
                        elif line and loads(line)["message"]["content"]:
                            count += 1
            except Exception:
                failed += 1
                return
            if count != chunks:
                short += 1

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
    return failed, short


async def _llmfactory(name: str, port: int, n: int, chunks: int) -> tuple[int, int]:
    import anyio

    import llmfactory
    from llmfactory.api.transport import close_clients

    runtime = "ollama" if name == "llmfactory (Ollama)" else "openai_compatible"
    identifier = f"bench-{chunks}:{runtime}@127.0.0.1:{port}"
    if llmfactory.LLMFactory.instance().find_model(identifier) is None:
        llmfactory.register_model(identifier)  # as discovery would have found it
    failed = short = 0

    async def one() -> None:
        nonlocal failed, short
        count = 0
        try:
            llm = llmfactory.create_llm(identifier)
            async with llm.stream_user_message("Hi") as stream:
                async for chunk in stream:
                    if chunk.content:
                        count += 1
        except Exception:
            failed += 1
            return
        if count != chunks:
            short += 1

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
    finally:
        await close_clients()
    return failed, short


def worker(name: str, port: int, n: int, chunks: int) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    import anyio

    raise_fd_limit()
    if name.startswith("llmfactory"):
        import llmfactory

        llmfactory.ensure_initialized()
        go = _llmfactory
    else:
        import httpx  # noqa: F401

        go = _raw
    # Warm-up: one stream, so that lazy imports are not timed.
    anyio.run(go, name, port, 1, chunks)
    before = peak_rss_kib()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    failed, short = anyio.run(go, name, port, n, chunks)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    if name.startswith("llmfactory"):
        llmfactory.LLMFactory.instance().flush_usage(30)
    peak = peak_rss_kib()
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_kb": peak, "rss_before_kb": before,
                      "failed": failed, "short": short}))


def _run(name: str, port: int, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.concurrency", "worker", name, str(port),
         str(CONVERSATIONS), str(CHUNKS)],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def bench_concurrency(repeat: int = REPEAT) -> list[Result]:
    """Wall time and peak RSS of 1 000 concurrent streams, vs raw httpx."""
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in CONTENDERS}
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as home, \
            ServerProcess("stream", "--chunks", str(CHUNKS)) as info:
        env = dict(os.environ, LLMFACTORY_HOME=home, LLMFACTORY_NO_DISCOVER="1")
        for _ in range(repeat):
            for name in CONTENDERS:
                runs[name].append(_run(name, info["port"], env))
    results: list[Result] = []
    summary: dict[str, tuple[float, float, float]] = {}
    for name, outs in runs.items():
        good = [o for o in outs if "error" not in o]
        errors = sum(o["failed"] + o["short"] for o in good) + len(outs) - len(good)
        if not good:
            results.append(Result(bench="concurrency", figure=f"{name}: wall time", value=0,
                                  unit="s", met=False, note="failed: " + outs[0]["error"]))
            continue
        wall = statistics.median(o["wall"] for o in good)
        cpu = statistics.median(o["cpu"] for o in good)
        rss = statistics.median(o["rss_kb"] for o in good) / 1024
        base = statistics.median(o["rss_before_kb"] for o in good) / 1024
        summary[name] = (wall, rss, cpu)
        raw = CONTENDERS[name]
        ours = name.startswith("llmfactory")
        note = f"{errors} error(s) in {len(outs) * CONVERSATIONS} streams; CPU {cpu:.2f} s"
        if ours and raw in summary:
            ratio = wall / summary[raw][0]
            results.append(Result(bench="concurrency", figure=f"{name}: wall time", value=wall,
                                  unit="s", target="≤ 1.5× raw, no error",
                                  met=ratio <= 1.5 and errors == 0,
                                  note=f"{ratio:.2f}× raw httpx; {note} "
                                  f"({cpu / summary[raw][2]:.2f}× raw)"))
            ratio = rss / summary[raw][1]
            results.append(Result(bench="concurrency", figure=f"{name}: peak RSS", value=rss,
                                  unit="MiB", target="≤ 1.5× raw", met=ratio <= 1.5,
                                  note=f"{ratio:.2f}× raw httpx; {base:.0f} MiB before the "
                                  "streams"))
        else:
            results.append(Result(bench="concurrency", figure=f"{name}: wall time", value=wall,
                                  unit="s", note=note))
            results.append(Result(bench="concurrency", figure=f"{name}: peak RSS", value=rss,
                                  unit="MiB", note=f"{base:.0f} MiB before the streams"))
    return results


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        from benchmarks.common import table

        print(table(bench_concurrency()))
