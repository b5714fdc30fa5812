"""Many processes, one registry file: discovery and usage rows for 10 s, and a writer killed.

Four processes start at once on a registry file that does not exist yet, and for
ten seconds each discovers two loopback Ollama servers (writing models and host
records) and makes calls whose usage rows the token-usage extension persists.
A fifth process writes batches of usage rows, one transaction each, and is
killed with SIGKILL halfway through. Then:

* no process saw ``database is locked`` (or any other error), and none lost a row:
  every call a worker made is one usage row;
* the killed writer's batches are each whole or absent (no partial transaction);
* ``PRAGMA integrity_check`` is ok, and the models and hosts are all there.

``tests/registry/test_store_processes.py`` covers the store alone (writers without
discovery; a lone writer killed mid-upsert).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from llmfactory.registry.store import Store
from tests.servers import OllamaServer, ServedModel

SECONDS = 10.0

_WORKER = r"""
import json, sys, time
from llmfactory import LLMFactory
name, host, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
factory = LLMFactory()
factory.ensure_initialized()  # start-up discovery of LLMFACTORY_HOSTS
llm = factory.create_llm(f"{name}:latest:ollama@{host}")
deadline = time.monotonic() + seconds
calls = refreshes = found = 0
while time.monotonic() < deadline:
    report = factory.refresh()  # a host too slow for the deadline on a busy machine is fine
    found += [h.status for h in report.hosts].count("ok")
    refreshes += 1
    for _ in range(4):
        answer = llm.complete_sync([{"role": "user", "content": f"call {calls}"}])
        assert answer.content == f"Echo: call {calls}", answer.content
        calls += 1
llm.close()
factory.close()  # every usage row is written before this returns
print(json.dumps({"calls": calls, "refreshes": refreshes, "found": found,
                  "identifier": llm.identifier}))
"""

_BATCH_WRITER = r"""
import sys
from llmfactory.registry.store import Store
from llmfactory.registry.models import UsageRecord
store = Store(sys.argv[1])
batch = 0
while True:
    store.add_usage([UsageRecord(identifier=f"batch-{batch}", provider="test", prompt_tokens=i)
                     for i in range(300)])
    batch += 1
    if batch == 3:
        print("ready", flush=True)
"""


def test_four_processes_discover_and_record_usage_while_a_writer_is_killed(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    models = [ServedModel(name=f"w{n}") for n in range(4)]
    with OllamaServer(models=models) as one, OllamaServer(models=models) as two:
        servers = (one, two)
        env = {**cli_env, "LLMFACTORY_HOME": str(tmp_path),
               "LLMFACTORY_HOSTS": f"ollama={one.url},ollama={two.url}"}
        env.pop("LLMFACTORY_NO_DISCOVER", None)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, f"w{n}", servers[n % 2].host, str(SECONDS)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for n in range(4)
        ]
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        results = []
        try:
            time.sleep(SECONDS / 3)  # the workers are well into their run
            victim = subprocess.Popen([sys.executable, "-c", _BATCH_WRITER, url], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
            workers.append(victim)  # killed at the end whatever happens
            assert victim.stdout is not None
            assert victim.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            os.kill(victim.pid, signal.SIGKILL)  # almost surely inside a transaction
            victim.communicate(timeout=30)
            for proc in workers[:4]:
                out, err = proc.communicate(timeout=SECONDS + 90)
                assert proc.returncode == 0, err
                assert "locked" not in err and "Traceback" not in err, err
                assert "cannot save" not in err, err  # the usage writer lost nothing
                results.append(json.loads(out))
        finally:
            for proc in workers:  # nothing is left running, also when an assertion failed
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()

    store = Store(url)
    try:
        assert store.integrity_check() == "ok"
        rows = Counter(r.identifier for r in store.query_usage())
        for result in results:
            assert result["calls"] > 0 and result["refreshes"] > 0 and result["found"] > 0
            assert rows[result["identifier"]] == result["calls"], result
        batches = {k: v for k, v in rows.items() if k.startswith("batch-")}
        assert len(batches) >= 3
        assert set(batches.values()) == {300}, "a killed transaction left part of a batch"
        stored = {m.identifier for m in store.load_models()}
        for server in servers:
            assert {f"w{n}:latest:ollama@{server.host}" for n in range(4)} <= stored
        assert sorted(h.address for h in store.load_hosts()) == sorted(
            s.host for s in servers)
    finally:
        store.close()
