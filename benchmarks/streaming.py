"""One long stream consumed end to end: llmfactory vs raw httpx vs the official clients.

A loopback server (its own process, :mod:`benchmarks.server`) answers every
request with the same pre-encoded body: 20 000 content chunks as Ollama NDJSON
(``/api/chat``) or as OpenAI SSE (``/v1/chat/completions``), one HTTP chunk per
frame. Each contender runs in a worker process of its own (imports do not
bleed into each other: litellm alone loads thousands of modules), keeps its
client and event loop between runs, and is driven round by round, interleaved
with the others, so that drift in the machine's speed hits all alike.

Per contender: chunks/s (content chunks delivered / wall time from the call to
the end of the stream; median over the rounds) and the time to the first
content chunk (median over short streams on a warm connection). Ratios are
against raw httpx reading the same framing in the same run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.common import ROOT, Result
from benchmarks.server import ServerProcess

N_CHUNKS = 20_000
SHORT = 10
ROUNDS = 5
TTFC_ROUNDS = 30

#: contender -> framing ("ndjson" or "sse")
CONTENDERS: dict[str, str] = {
    "raw httpx (NDJSON)": "ndjson",
    "llmfactory (Ollama)": "ndjson",
    "ollama client": "ndjson",
    "raw httpx (SSE)": "sse",
    "llmfactory (OpenAI-compatible)": "sse",
    "openai client": "sse",
    "litellm": "sse",
}
OURS = {"ndjson": "llmfactory (Ollama)", "sse": "llmfactory (OpenAI-compatible)"}
RAW = {"ndjson": "raw httpx (NDJSON)", "sse": "raw httpx (SSE)"}

Runner = Callable[[int], Awaitable[tuple[float, float, int]]]
"""``run(n)`` -> (seconds to the end of the stream, seconds to the first content chunk,
content chunks received)."""


# --------------------------------------------------------------------------- contenders


def _messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": "Tell me a long story."}]


def make_runner(name: str, port: int) -> Runner:
    """The coroutine function that streams ``bench-<n>`` once with contender ``name``."""
    base = f"http://127.0.0.1:{port}"
    clock = time.perf_counter

    if name.startswith("raw httpx"):
        import httpx

        client = httpx.AsyncClient(timeout=60)
        loads = json.loads
        if name == "raw httpx (NDJSON)":

            async def run(n: int) -> tuple[float, float, int]:
                payload = {"model": f"bench-{n}", "messages": _messages(), "stream": True}
                first = 0.0
                count = 0
                start = clock()
                async with client.stream("POST", base + "/api/chat", json=payload) as r:
                    async for line in r.aiter_lines():
                        if line:
                            obj = loads(line)
                            if obj["message"]["content"]:
                                if not count:
                                    first = clock()
                                count += 1
                return clock() - start, first - start, count

            return run

        async def run(n: int) -> tuple[float, float, int]:
            payload = {"model": f"bench-{n}", "messages": _messages(), "stream": True,
                       "stream_options": {"include_usage": True}}
            first = 0.0
            count = 0
            start = clock()
            async with client.stream("POST", base + "/v1/chat/completions", json=payload) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        data = line[6:]
                        if data == "[DONE]":
                            break
                        obj = loads(data)
                        choices = obj["choices"]
                        if choices and choices[0]["delta"].get("content"):
                            if not count:
                                first = clock()
                            count += 1
            return clock() - start, first - start, count

        return run

    if name.startswith("llmfactory"):
        import llmfactory

        runtime = "ollama" if name == OURS["ndjson"] else "openai_compatible"
        llms: dict[int, Any] = {}

        async def run(n: int) -> tuple[float, float, int]:
            llm = llms.get(n)
            if llm is None:  # as users do: a model in the registry, a conversation with it
                identifier = f"bench-{n}:{runtime}@127.0.0.1:{port}"
                if llmfactory.LLMFactory.instance().find_model(identifier) is None:
                    llmfactory.register_model(identifier)
                llm = llms[n] = llmfactory.create_llm(identifier)
            llm.clear_history()
            first = 0.0
            count = 0
            start = clock()
            async with llm.stream_user_message("Tell me a long story.") as stream:
                async for chunk in stream:
                    if chunk.content:
                        if not count:
                            first = clock()
                        count += 1
            return clock() - start, first - start, count

        return run

    if name == "ollama client":
        import ollama

        oclient = ollama.AsyncClient(host=base)

        async def run(n: int) -> tuple[float, float, int]:
            first = 0.0
            count = 0
            start = clock()
            parts = await oclient.chat(model=f"bench-{n}", messages=_messages(), stream=True)
            async for part in parts:
                if part.message.content:
                    if not count:
                        first = clock()
                    count += 1
            return clock() - start, first - start, count

        return run

    if name == "openai client":
        import openai

        aclient = openai.AsyncOpenAI(base_url=base + "/v1", api_key="bench", max_retries=0)

        async def run(n: int) -> tuple[float, float, int]:
            first = 0.0
            count = 0
            start = clock()
            stream = await aclient.chat.completions.create(
                model=f"bench-{n}", messages=_messages(),  # type: ignore[arg-type]
                stream=True, stream_options={"include_usage": True},
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if not count:
                        first = clock()
                    count += 1
            return clock() - start, first - start, count

        return run

    if name == "litellm":
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False

        async def run(n: int) -> tuple[float, float, int]:
            first = 0.0
            count = 0
            start = clock()
            response = await litellm.acompletion(
                model=f"openai/bench-{n}", api_base=base + "/v1", api_key="bench",
                messages=_messages(), stream=True, stream_options={"include_usage": True},
                max_retries=0,
            )
            async for chunk in response:
                if chunk.choices and chunk.choices[0].delta.content:
                    if not count:
                        first = clock()
                    count += 1
            return clock() - start, first - start, count

        return run

    raise ValueError(f"unknown contender {name!r}")


def worker(name: str, port: int) -> None:
    """Serve ``run N`` commands on stdin, one JSON result per line on stdout."""
    import asyncio

    loop = asyncio.new_event_loop()
    run = make_runner(name, port)
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command != "run":
            break
        try:
            seconds, ttfc, count = loop.run_until_complete(run(int(arg)))
            out: dict[str, Any] = {"seconds": seconds, "ttfc": ttfc, "chunks": count}
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(json.dumps(out), flush=True)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


# --------------------------------------------------------------------------- driver


class Worker:
    """A contender's worker process."""

    def __init__(self, name: str, port: int, env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.streaming", "worker", name, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {name} worker did not start")

    def run(self, n: int) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"run {n}\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def bench_streaming(
    rounds: int = ROUNDS, ttfc_rounds: int = TTFC_ROUNDS, contenders: list[str] | None = None
) -> list[Result]:
    """chunks/s and time to first chunk for each contender over the same bytes."""
    import importlib.util

    names = [
        c for c in (contenders or list(CONTENDERS))
        if c.startswith(("raw", "llmfactory"))
        or importlib.util.find_spec(c.split()[0]) is not None
    ]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    ttfc: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, list[str]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as home, \
            ServerProcess("stream", "--chunks", f"{N_CHUNKS},{SHORT}") as info:
        env = dict(os.environ, LLMFACTORY_HOME=home, LLMFACTORY_NO_DISCOVER="1")
        workers = [Worker(n, info["port"], env) for n in names]
        try:
            for w in workers:  # warm-up: connections, lazy imports, caches
                w.run(SHORT)
                w.run(N_CHUNKS)
            for _ in range(rounds):
                for w in workers:
                    out = w.run(N_CHUNKS)
                    if "error" in out or out["chunks"] != N_CHUNKS:
                        errors[w.name].append(out.get("error") or f"{out['chunks']} chunks")
                    else:
                        seconds[w.name].append(out["seconds"])
            for _ in range(ttfc_rounds):
                for w in workers:
                    out = w.run(SHORT)
                    if "error" in out or out["chunks"] != SHORT:
                        errors[w.name].append(out.get("error") or f"{out['chunks']} chunks")
                    else:
                        ttfc[w.name].append(out["ttfc"])
        finally:
            for w in workers:
                w.close()
    return _results(names, seconds, ttfc, errors)


def _results(
    names: list[str],
    seconds: dict[str, list[float]],
    ttfc: dict[str, list[float]],
    errors: dict[str, list[str]],
) -> list[Result]:
    rate = {n: N_CHUNKS / statistics.median(s) for n, s in seconds.items() if s}
    first = {n: statistics.median(t) * 1000 for n, t in ttfc.items() if t}
    results: list[Result] = []
    for framing in ("ndjson", "sse"):
        raw, ours = RAW[framing], OURS[framing]
        group = [n for n in names if CONTENDERS[n] == framing]
        peers = [n for n in group if n not in (raw, ours)]
        for name in group:
            if name not in rate:
                results.append(Result(bench="streaming", figure=f"{name}: chunks/s", value=0,
                                      unit="chunks/s", met=False if name == ours else None,
                                      note="failed: " + "; ".join(errors[name][:2])))
                continue
            ratio = rate[name] / rate[raw] if raw in rate else float("nan")
            target, met, note = "", None, f"{ratio:.2f}× raw httpx"
            if name == ours:
                beaten = [p for p in peers if p in rate and rate[p] >= rate[name]]
                target = "≥ 0.9× raw, ahead of every peer"
                met = ratio >= 0.9 and not beaten and not errors[name]
                if beaten:
                    note += f"; behind {', '.join(beaten)}"
            if errors[name]:
                note += f"; {len(errors[name])} failed run(s): {errors[name][0]}"
            results.append(Result(bench="streaming", figure=f"{name}: chunks/s",
                                  value=rate[name], unit="chunks/s", target=target, met=met,
                                  note=note))
        for name in group:
            if name not in first:
                continue
            delta = first[name] - first.get(raw, float("nan"))
            target, met = "", None
            if name == ours:
                target, met = "≤ raw + 1 ms", delta <= 1.0
            results.append(Result(bench="streaming", figure=f"{name}: time to first chunk",
                                  value=first[name], unit="ms", target=target, met=met,
                                  note="" if name == raw else f"{delta:+.2f} ms vs raw httpx"))
    return results


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "worker":
        worker(sys.argv[2], int(sys.argv[3]))
    else:
        from benchmarks.common import table

        print(table(bench_streaming(contenders=sys.argv[1:] or None)))
