"""The benchmark runner: ``python -m benchmarks [NAME ...] [--markdown FILE]``."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable

from benchmarks.common import Result, table

#: name -> "module:function"; each function returns a list of Results.
BENCHMARKS: dict[str, str] = {
    "import": "benchmarks.startup:bench_import",
    "coldstart": "benchmarks.startup:bench_cold_start",
    "registry": "benchmarks.registry_scale:bench_registry",
    "discovery": "benchmarks.discovery:bench_discovery",
    "streaming": "benchmarks.streaming:bench_streaming",
    "concurrency": "benchmarks.concurrency:bench_concurrency",
}


def _load(spec: str) -> Callable[[], list[Result]]:
    module, _, name = spec.partition(":")
    fn: Callable[[], list[Result]] = getattr(importlib.import_module(module), name)
    return fn


def _cpu() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory() -> str:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="utf-8") as fh:
        kib = int(fh.readline().split()[1])
        return f"{kib / 1024 / 1024:.0f} GiB RAM"
    return "RAM unknown"


def load() -> str:
    """The 1-minute load average, when the platform has one."""
    with contextlib.suppress(OSError, AttributeError):
        return f"{os.getloadavg()[0]:.2f}"
    return "?"


def environment() -> str:
    """A line describing this machine and the versions measured."""
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for package in ("llmfactory", "httpx", "httpcore", "h11", "anyio", "sqlalchemy",
                    "sqlmodel", "pydantic", "openai", "ollama", "litellm"):
        with contextlib.suppress(PackageNotFoundError):
            versions.append(f"{package} {version(package)}")
    return (
        f"{datetime.date.today().isoformat()}; {platform.platform()}; {_cpu()}, "
        f"{os.cpu_count()} CPUs, {_memory()}; Python {platform.python_version()}; "
        + ", ".join(versions)
    )


def main(argv: list[str] | None = None) -> None:
    """Run the named benchmarks (all by default) and print a table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    results: list[Result] = []
    loads = [load()]
    started = time.perf_counter()
    for name in names:
        print(f"running {name} …", file=sys.stderr, flush=True)
        try:
            fn = _load(BENCHMARKS[name])
        except ModuleNotFoundError as exc:
            print(f"  skipped: {exc}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        results.extend(fn())
        loads.append(load())
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    footer = (f"{len(names)} benchmark(s) in {time.perf_counter() - started:.0f} s; "
              f"load average before and after each: {', '.join(loads)}")
    print(environment())
    print(table(results))
    print(footer)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(f"Measured {environment()}\n\n{table(results, markdown=True)}\n\n"
                     f"{footer}\n")
        print(f"wrote {args.markdown}", file=sys.stderr)
