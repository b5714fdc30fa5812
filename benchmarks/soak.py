"""Soak: hours of flaky networks in minutes — mixed discovery and streaming under random faults.

Run by hand (it is not part of ``python -m benchmarks`` nor of the tests)::

    python benchmarks/soak.py --minutes 10 --max-requests 200000

Loopback only. A separate process (this script with ``--serve``) runs the
test suite's protocol-faithful servers (``tests/servers``: two Ollama servers,
one LM Studio server, one black-holed port; it needs the ``test`` extra for
aiohttp) and makes a random fraction of their answers misbehave: HTTP
500/503, 429 storms, HTML pages, resets before and during a body, truncated
and malformed streams, error objects mid-stream, stalls, drips, 20 MB bodies,
invalid UTF-8, redirects. This process runs, on one event loop:

* ``--concurrency`` conversations streaming (and sometimes sending) messages
  to random models, each call bounded by a 1.5 s read timeout;
* one discovery loop re-probing every host (and a refused port) every second,
  writing the registry file;
* a sampler recording, every ``--sample-every`` seconds, the open and busy
  pooled HTTP connections, the open file descriptors, the RSS and the threads.

It stops after ``--minutes`` or ``--max-requests`` calls, whichever comes
first, and prints a summary: each metric at the end of the warm-up, at the
end and at its maximum; calls by outcome and error type; discovery statuses;
and the invariants — no error other than llmfactory's typed ones, history
unchanged by every failed call, every call's usage row in the registry, the
registry's integrity check. The exit status is 1 when an invariant fails or
a resource grew beyond ``--max-growth``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.servers in the server process

# --------------------------------------------------------------------------- the servers


def _faults(other_url: str) -> list[tuple[str, Callable[[], Any]]]:
    from tests.servers import Fault

    def http_date(seconds: float) -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=seconds)

    return [
        ("http 500", lambda: Fault.http_error(500)),
        ("http 502 no body", lambda: Fault.http_error(502, None)),
        ("http 503 retry-after 0", lambda: Fault.http_error(503, retry_after=0)),
        ("429 retry-after 0.2 s", lambda: Fault.rate_limited(0.2)),
        ("429 retry-after date", lambda: Fault.rate_limited(http_date(1))),
        ("html 200", lambda: Fault.html()),
        ("html 502", lambda: Fault.html(502)),
        ("reset before response", lambda: Fault.disconnect_now()),
        ("reset mid-stream", lambda: Fault.cut_after(2)),
        ("closed mid-stream", lambda: Fault.cut_after(1, reset=False)),
        ("malformed line", lambda: Fault.malformed_line(1)),
        ("error mid-stream", lambda: Fault.error_mid_stream(1)),
        ("stall before headers", lambda: Fault.stall_before_headers(3)),
        ("stall after headers", lambda: Fault.stall_after_headers(3)),
        ("slow drip", lambda: Fault.drip(0.02)),
        ("one byte a second", lambda: Fault.drip_bytes(1.0, 1)),
        ("20 MB body", lambda: Fault.big_body(20 * 1000 * 1000)),
        ("invalid utf-8", lambda: Fault.invalid_utf8()),
        ("wrong content type", lambda: Fault.wrong_content_type()),
        ("redirect", lambda: Fault.http_error(307, None, headers={"Location": other_url})),
    ]


def serve(seed: int, fault_rate: float) -> None:
    """The server process: start the servers, print their addresses, fault at random."""
    from tests.servers import BlackholeServer, OllamaServer, OpenAICompatServer, free_port

    servers = {
        "ollama-a": OllamaServer(),
        "ollama-b": OllamaServer(),
        "lmstudio": OpenAICompatServer("lmstudio"),
    }
    for server in servers.values():
        server.start()
    hole = BlackholeServer().start()
    faults = _faults(servers["ollama-a"].url + "/elsewhere")
    injected: Counter[str] = Counter()
    lock = threading.Lock()
    for n, server in enumerate(servers.values()):
        rng = random.Random(seed * 1000 + n)  # one per server thread
        original = server._take_fault

        def take(method: str, path: str, *, _rng: random.Random = rng,
                 _original: Any = original) -> Any:
            fault = _original(method, path)
            if fault is None and _rng.random() < fault_rate:
                name, make = _rng.choice(faults)
                with lock:
                    injected[name] += 1
                fault = make()
            return fault

        server._take_fault = take  # type: ignore[method-assign]
    print(json.dumps({
        "servers": {name: s.url for name, s in servers.items()},
        "blackhole": hole.url,
        "refused": f"http://127.0.0.1:{free_port()}",
    }), flush=True)
    stop = threading.Event()

    def forget() -> None:  # the recorded requests would grow for the whole run
        while not stop.wait(10):
            for server in servers.values():
                server.reset()

    threading.Thread(target=forget, daemon=True).start()
    sys.stdin.read()  # until the soak closes our stdin
    stop.set()
    for server in servers.values():
        server.stop()
    hole.stop()
    with lock:
        print(json.dumps({"injected": dict(injected)}), flush=True)


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    """Resources at one moment."""

    elapsed: float
    calls: int
    connections: int
    busy: int
    fds: int
    rss_mib: float
    threads: int


def _rss_mib() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _pool() -> tuple[int, int]:
    """(open, busy) connections over every pooled client of the running event loop."""
    import httpx

    from llmfactory.api import transport

    opened = busy = 0
    for client in (transport._clients.get(None) or {}).values():
        pool = getattr(client._transport, "_pool", None)
        if not isinstance(client._transport, httpx.AsyncHTTPTransport) or pool is None:
            continue
        for connection in pool.connections:
            if not connection.is_closed():
                opened += 1
                busy += not connection.is_idle()
    return opened, busy


@dataclass
class Tally:
    """What happened."""

    calls: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    history_violations: int = 0
    deadline: int = 0  # calls cut short by the caller's deadline (cancelled, not errors)
    discovery: Counter[str] = field(default_factory=Counter)
    discoveries: int = 0
    discovery_errors: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    idle: Sample | None = None  # after the last call


# --------------------------------------------------------------------------- the soak


async def _soak(args: argparse.Namespace, addresses: dict[str, Any], tally: Tally) -> None:
    import anyio

    from llmfactory import LLMConfig, LLMFactory, LLMFactoryError
    from llmfactory.api.transport import close_clients

    servers = addresses["servers"]
    factory = LLMFactory()
    await anyio.to_thread.run_sync(factory.ensure_initialized)  # start-up discovery
    identifiers = [
        f"llama3.2:latest:ollama@{servers['ollama-a'][7:]}",
        f"qwen3:4b:ollama@{servers['ollama-b'][7:]}",
        f"qwen/qwen3-4b:lmstudio@{servers['lmstudio'][7:]}",
    ]
    config = LLMConfig(timeout=1.5, connect_timeout=1.0, retries=1)
    started = time.monotonic()
    deadline = started + args.minutes * 60
    stop = anyio.Event()

    def done() -> bool:
        if time.monotonic() >= deadline or tally.calls >= args.max_requests:
            stop.set()
        return stop.is_set()

    async def talk(worker: int) -> None:
        rng = random.Random(args.seed + worker)
        while not done():
            llm = factory.create_llm(rng.choice(identifiers), config)
            for turn in range(50):  # then a fresh conversation: objects come and go too
                if done():
                    break
                before = llm.messages
                text = f"w{worker} t{turn} {rng.random():.6f}"
                tally.calls += 1
                succeeded = False
                # The read timeout bounds silence; a server dripping a byte a second is
                # still answering. The overall deadline is the caller's cancel scope.
                with anyio.move_on_after(args.call_deadline) as scope:
                    try:
                        if rng.random() < 0.75:
                            async with llm.stream_user_message(text) as stream:
                                async for _ in stream:
                                    pass
                        else:
                            await llm.send_user_message(text)
                        succeeded = True
                    except LLMFactoryError as exc:
                        tally.errors[type(exc).__name__] += 1
                    except Exception as exc:  # a bug: anything else must not escape
                        tally.unexpected[f"{type(exc).__name__}: {exc}"[:200]] += 1
                if scope.cancelled_caught:
                    tally.deadline += 1
                if succeeded:
                    tally.ok += 1
                    if len(llm.messages) != len(before) + 2:
                        tally.history_violations += 1
                elif llm.messages != before:
                    tally.history_violations += 1
                if turn % 10 == 9:
                    llm.clear_history()  # keep prompts short
            await llm.aclose()

    async def discover() -> None:
        while not done():
            try:
                report = await factory.arefresh()
                tally.discoveries += 1
                for host in report.hosts:
                    tally.discovery[host.status] += 1
            except Exception as exc:
                tally.discovery_errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            with anyio.move_on_after(1.0):
                await stop.wait()

    def measure() -> Sample:
        gc.collect()
        opened, busy = _pool()
        now = Sample(
            elapsed=time.monotonic() - started, calls=tally.calls, connections=opened,
            busy=busy, fds=_fds(), rss_mib=_rss_mib(), threads=threading.active_count(),
        )
        print(f"[{now.elapsed:7.1f} s] calls {now.calls:>7}  ok {tally.ok:>7}  "
              f"conns {now.connections:>3} (busy {now.busy:>2})  fds {now.fds:>4}  "
              f"rss {now.rss_mib:7.1f} MiB  threads {now.threads}", file=sys.stderr,
              flush=True)
        return now

    async def sample() -> None:
        while not stop.is_set():
            tally.samples.append(measure())
            with anyio.move_on_after(args.sample_every):
                await stop.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sample)
        tg.start_soon(discover)
        for worker in range(args.concurrency):
            tg.start_soon(talk, worker)
    tally.idle = measure()  # every call has ended; the pool is still open
    await close_clients()
    await anyio.to_thread.run_sync(factory.close)  # writes the last usage rows


_WINDOW = 5  # samples: metrics are compared as medians over this many, to ignore spikes


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _summary(args: argparse.Namespace, tally: Tally, injected: dict[str, int],
             usage_rows: int, integrity: str, elapsed: float) -> tuple[str, bool]:
    samples = tally.samples
    after = [s for s in samples if s.elapsed >= args.warmup] or samples
    first, last = after[:_WINDOW], after[-_WINDOW:]
    idle = tally.idle
    assert idle is not None
    lines = [
        f"Soak: {elapsed / 60:.1f} min, {tally.calls} calls "
        f"({tally.calls / elapsed:.0f}/s), {tally.discoveries} discoveries, "
        f"concurrency {args.concurrency}, fault rate {args.fault_rate:.0%}, seed {args.seed}",
        "",
        f"Medians of {len(first)} samples after the {args.warmup:g} s warm-up "
        f"(from {first[0].elapsed:.0f} s) and of the last {len(last)} "
        f"(to {last[-1].elapsed:.0f} s); one sample every {args.sample_every:g} s.",
        "",
        "| metric | after warm-up | at the end | max | growth | after the last call |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ok = True
    for name, label, limit in (
        ("connections", "open pooled connections", float(args.max_growth_connections)),
        ("busy", "connections in use", float(args.max_growth_connections)),
        ("fds", "open file descriptors", float(args.max_growth_fds)),
        ("rss_mib", "RSS (MiB)", None),
        ("threads", "threads", 2.0),
    ):
        start = _median([getattr(s, name) for s in first])
        end = _median([getattr(s, name) for s in last])
        top = max(getattr(s, name) for s in samples)
        growth = end - start
        if limit is None:
            limit = start * args.max_growth_rss
        fmt = "{:.1f}" if name == "rss_mib" else "{:.0f}"
        flag = ""
        if growth > limit:
            ok = False
            flag = " **grew**"
        cells = [fmt.format(v) for v in (start, end, top)]
        cells += [f"{growth:+.1f}{flag}", fmt.format(getattr(idle, name))]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    failed = sum(tally.errors.values())
    lines += ["", f"Calls: {tally.ok} ok, {failed} failed with a typed error, "
              f"{tally.deadline} cut by the caller's {args.call_deadline:g} s deadline "
              "(a cancel scope), "
              f"{sum(tally.unexpected.values())} with anything else."]
    for name, count in tally.errors.most_common():
        lines.append(f"- {name}: {count}")
    for name, count in tally.unexpected.most_common():
        lines.append(f"- UNEXPECTED {name}: {count}")
    lines.append("")
    lines.append("Discovery host outcomes: " + ", ".join(
        f"{status} {count}" for status, count in tally.discovery.most_common()))
    for name, count in tally.discovery_errors.most_common():
        lines.append(f"- UNEXPECTED discovery error {name}: {count}")
    if injected:
        lines.append("")
        lines.append(f"Faults injected: {sum(injected.values())} — " + ", ".join(
            f"{name} {count}" for name, count in sorted(injected.items(),
                                                        key=lambda kv: -kv[1])))
    invariants = [
        ("only typed errors escaped", not tally.unexpected and not tally.discovery_errors),
        ("history unchanged by every failed call, +2 by every success",
         tally.history_violations == 0),
        # A cancelled call records no usage (unless cut after its answer was complete).
        (f"every completed call has its usage row ({usage_rows} rows, "
         f"{tally.calls - tally.deadline} completed calls)",
         tally.calls - tally.deadline <= usage_rows <= tally.calls),
        (f"registry integrity check: {integrity}", integrity == "ok"),
        ("no connection in use after the last call", idle.busy == 0),
    ]
    lines.append("")
    for text, held in invariants:
        lines.append(f"- [{'x' if held else ' '}] {text}")
        ok = ok and held
    return "\n".join(lines), ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--max-requests", type=int, default=1_000_000,
                        help="stop after this many calls (default 1 000 000)")
    parser.add_argument("--concurrency", type=int, default=8, help="conversations at once")
    parser.add_argument("--fault-rate", type=float, default=0.15,
                        help="fraction of server answers that misbehave (default 0.15)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--call-deadline", type=float, default=5.0,
                        help="each call's overall deadline, seconds (default 5)")
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds before the baseline sample (default 60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-growth-fds", type=int, default=16)
    parser.add_argument("--max-growth-connections", type=int, default=16)
    parser.add_argument("--max-growth-rss", type=float, default=0.25,
                        help="largest RSS growth after warm-up, as a fraction (default 0.25)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.seed, args.fault_rate)
        return
    if args.minutes <= 0 or args.minutes > 24 * 60 or args.max_requests <= 0:
        parser.error("--minutes must be in (0, 1440] and --max-requests > 0")

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--seed", str(args.seed),
         "--fault-rate", str(args.fault_rate)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    home = tempfile.mkdtemp(prefix="llmfactory-soak-")
    tally = Tally()
    injected: dict[str, int] = {}
    try:
        assert server.stdout is not None and server.stdin is not None
        addresses = json.loads(server.stdout.readline())
        urls = [*addresses["servers"].values(), addresses["blackhole"], addresses["refused"]]
        assert all(u.startswith("http://127.0.0.1:") for u in urls), urls  # loopback only
        servers = addresses["servers"]
        os.environ.update({
            "LLMFACTORY_HOME": home,
            "LLMFACTORY_NO_DEFAULT_HOSTS": "1",
            "LLMFACTORY_HOSTS": ",".join([
                f"ollama={servers['ollama-a']}", f"ollama={servers['ollama-b']}",
                f"lmstudio={servers['lmstudio']}", f"ollama={addresses['blackhole']}",
                f"ollama={addresses['refused']}",
            ]),
        })
        for name in ("LLMFACTORY_CONFIG", "LLMFACTORY_DATABASE_URL", "LLMFACTORY_NO_DISCOVER",
                     "OLLAMA_HOST", "LMSTUDIO_HOST"):
            os.environ.pop(name, None)
        import anyio

        started = time.monotonic()
        anyio.run(_soak, args, addresses, tally)
        elapsed = time.monotonic() - started
        server.stdin.close()
        for line in server.stdout:
            if line.startswith("{"):
                injected = json.loads(line).get("injected", {})
        server.wait(timeout=30)
        from llmfactory.registry.store import Store

        store = Store(f"sqlite:///{Path(home) / 'registry.db'}")
        usage_rows = len(store.query_usage())
        integrity = store.integrity_check()
        store.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(home, ignore_errors=True)
    text, ok = _summary(args, tally, injected, usage_rows, integrity, elapsed)
    print(text)
    print("\nverdict:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
