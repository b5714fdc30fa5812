"""The benchmark runner: ``python -m benchmarks [NAME ...] [--markdown FILE]``."""

from __future__ import annotations

import argparse
import datetime
import importlib
import platform
import sys
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


def environment() -> str:
    """A line describing this machine and the versions measured."""
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for package in ("llmfactory", "httpx", "openai", "ollama", "litellm"):
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    import os

    return (
        f"{datetime.date.today().isoformat()}; {platform.platform()}; "
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}; " + ", ".join(versions)
    )


def main(argv: list[str] | None = None) -> None:
    """Run the named benchmarks (all by default) and print a table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME",
                        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    results: list[Result] = []
    for name in names:
        print(f"running {name} …", file=sys.stderr, flush=True)
        try:
            fn = _load(BENCHMARKS[name])
        except ModuleNotFoundError as exc:
            print(f"  skipped: {exc}", file=sys.stderr)
            continue
        results.extend(fn())
    print(environment())
    print(table(results))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(f"Measured {environment()}\n\n{table(results, markdown=True)}\n")
        print(f"wrote {args.markdown}", file=sys.stderr)
