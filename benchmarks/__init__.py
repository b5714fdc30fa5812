"""Benchmarks of llmfactory against its peers and the floor (raw httpx).

Run by hand: ``python -m benchmarks [NAME ...] [--markdown FILE]``; results are
recorded in docs/benchmarks.md. Every server a benchmark talks to runs on
127.0.0.1 in a process of its own; every figure is a median over repeated
runs; every comparison is a ratio taken in the same run.
"""

import os

# litellm fetches its model price map from the internet at import unless told not to;
# the benchmarks talk to 127.0.0.1 only (child processes inherit this).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Measured processes use bytecode caches, as an installed package does (pip compiles
# them at install time; an editable checkout writes them on first import). Without
# this, llmfactory's modules would be compiled from source in every process while
# the peers' came precompiled.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
