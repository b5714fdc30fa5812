"""The registry at 10 000 and 100 000 models.

Upserts are timed in fresh registry files (median of 3; "again" upserts the
same models a second time, as a rediscovery does); the filtered listing is the
median of 21 calls, the lookup the median of 5 batches of 5 000 identifiers,
and the CLI (``llmfactory models --json``: a fresh process that loads the whole
registry and prints it) the median of 3 runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import Result


def _models(n: int) -> list[object]:
    from llmfactory import LLMModel

    return [
        LLMModel(
            identifier=f"model-{i}:latest:ollama@host{i % 100}:11434",
            name=f"model-{i}:latest",
            provider="meta" if i % 3 else "qwen",
            runtime="ollama",
            host=f"host{i % 100}:11434",
            capabilities=["chat", "streaming"] + (["vision"] if i % 7 == 0 else []),
            context_length=4096 * (1 + i % 8),
            source="discovered",
        )
        for i in range(n)
    ]


def _upserts(models: list[object], home: str, name: str) -> tuple[float, float]:
    """Seconds to upsert ``models`` into a fresh registry, and to upsert them again."""
    from llmfactory import LLMFactory

    factory = LLMFactory(database_url=f"sqlite:///{home}/{name}.db", discover=False)
    factory.ensure_initialized()
    start = time.perf_counter()
    factory.add_models(models)  # type: ignore[arg-type]
    upsert = time.perf_counter() - start
    start = time.perf_counter()
    factory.add_models(models)  # type: ignore[arg-type]
    reupsert = time.perf_counter() - start
    factory.close()
    return upsert, reupsert


def _one(n: int, repeat: int = 3) -> list[Result]:
    from llmfactory import LLMFactory

    models = _models(n)
    results = []
    with tempfile.TemporaryDirectory() as home:
        # Each repetition in a fresh registry file; the last one is used below.
        runs = [_upserts(models, home, f"registry{i}") for i in range(repeat)]
        upsert = statistics.median(r[0] for r in runs)
        reupsert = statistics.median(r[1] for r in runs)
        url = f"sqlite:///{home}/registry{repeat - 1}.db"
        factory = LLMFactory(database_url=url, discover=False)
        factory.ensure_initialized()
        factory.list_models(provider="qwen", capability="vision")  # builds the sorted view
        times = []
        for _ in range(21):
            start = time.perf_counter()
            factory.list_models(provider="qwen", capability="vision")
            times.append(time.perf_counter() - start)
        listed = statistics.median(times)
        ids = [m.identifier for m in models[:: max(1, n // 5000)]]  # type: ignore[attr-defined]
        batches = []
        for _ in range(5):
            start = time.perf_counter()
            for ident in ids:
                factory.get_model(ident)
            batches.append((time.perf_counter() - start) / len(ids))
        lookup = statistics.median(batches)
        factory.close()
        env = dict(os.environ, LLMFACTORY_HOME=home, LLMFACTORY_DATABASE_URL=url,
                   LLMFACTORY_NO_DISCOVER="1")
        cli = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "llmfactory", "models", "--json"], env=env,
                           check=True, stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - start)
        cli_time = statistics.median(cli)
    small = n <= 10_000
    label = f"{n:,}"
    results.append(Result(bench=f"registry {label}", figure="upsert all (new)",
                          value=upsert, unit="s", target="< 1 s" if small else "",
                          met=(upsert < 1) if small else None))
    results.append(Result(bench=f"registry {label}", figure="upsert all again (rediscovery)",
                          value=reupsert, unit="s"))
    results.append(Result(bench=f"registry {label}", figure="list_models(provider, capability)",
                          value=listed * 1000, unit="ms", target="< 20 ms" if small else "",
                          met=(listed < 0.020) if small else None))
    results.append(Result(bench=f"registry {label}", figure="get_model(id)",
                          value=lookup * 1e6, unit="µs", target="< 50 µs" if small else "",
                          met=(lookup < 50e-6) if small else None))
    results.append(Result(bench=f"registry {label}", figure="llmfactory models --json",
                          value=cli_time, unit="s", target="< 1.5 s" if small else "",
                          met=(cli_time < 1.5) if small else None))
    return results


def bench_registry() -> list[Result]:
    """Upsert, filtered listing, lookup and the CLI at 10 000 and 100 000 models."""
    return _one(10_000) + _one(100_000)
