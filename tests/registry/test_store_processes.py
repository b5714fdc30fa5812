"""Several processes sharing one registry file; a writer killed mid-transaction."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from llmfactory.registry.store import Store

_WORKER = r"""
import sys, time
from llmfactory.registry.store import Store
from llmfactory.registry.models import LLMModel, UsageRecord
url, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = Store(url)
deadline = time.monotonic() + seconds
batch = 0
while time.monotonic() < deadline:
    store.upsert_models([
        LLMModel(identifier=f"{name}-{batch}-{i}:ollama@h:1", name=f"{name}-{batch}-{i}",
                 runtime="ollama", host="h:1", source="discovered")
        for i in range(5)
    ])
    store.add_usage([UsageRecord(identifier=f"{name}-{batch}", prompt_tokens=batch)
                     for _ in range(3)])
    batch += 1
store.close()
print(batch)
"""


def test_four_processes_write_without_losing_a_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    Store(url).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url, f"w{n}", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    batches = {}
    for n, proc in enumerate(procs):
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert "locked" not in err
        batches[f"w{n}"] = int(out)
    store = Store(url)
    models = store.load_models()
    usage = store.query_usage()
    assert len(models) == 5 * sum(batches.values())
    assert len(usage) == 3 * sum(batches.values())
    assert all(b > 0 for b in batches.values())
    assert store.integrity_check() == "ok"
    store.close()


_KILLED_WRITER = r"""
import sys
from llmfactory.registry.store import Store
from llmfactory.registry.models import LLMModel
store = Store(sys.argv[1])
print("ready", flush=True)
batch = 0
while True:
    store.upsert_models([
        LLMModel(identifier=f"b{batch}-{i}:ollama@h:1", name=f"b{batch}-{i}", runtime="ollama",
                 host="h:1", source="discovered", extras={"batch": batch})
        for i in range(200)
    ])
    batch += 1
"""


def test_writer_killed_mid_transaction_leaves_a_consistent_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    url = f"sqlite:///{path}"
    Store(url).close()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn = sqlite3.connect(path, timeout=30)
        count = conn.execute("SELECT count(*) FROM models").fetchone()[0]
        conn.close()
        if count >= 600:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    store = Store(url)
    assert store.integrity_check() == "ok"
    per_batch: dict[int, int] = {}
    for model in store.load_models():
        per_batch[model.extras["batch"]] = per_batch.get(model.extras["batch"], 0) + 1
    assert per_batch, "the writer wrote nothing before it was killed"
    assert set(per_batch.values()) == {200}, "a batch was partly written"
    store.close()
