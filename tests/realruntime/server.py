"""Start and stop a real llama-cpp-python OpenAI-compatible server for end-to-end tests.

``LlamaServer`` runs ``python -m llama_cpp.server`` on a free localhost port in its own
session, waits (bounded) until ``GET /v1/models`` answers 200, and stops it by PID::

    with LlamaServer() as server:          # generates the tiny model into a temp dir
        httpx.get(f"{server.url}/v1/models")

The interpreter that runs the server is ``sys.executable`` unless the environment
variable ``LLMFACTORY_REALRUNTIME_PYTHON`` names another one (e.g. a separate venv that
has ``llama-cpp-python[server]``); ``gguf`` is always needed in the test process itself,
which writes the model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import httpx

__all__ = [
    "MODEL_ALIAS",
    "PYTHON_ENV_VAR",
    "LlamaServer",
    "LlamaServerError",
    "find_free_port",
    "realruntime_available",
    "server_python",
]

MODEL_ALIAS = "tiny"
PYTHON_ENV_VAR = "LLMFACTORY_REALRUNTIME_PYTHON"

# What ``python -m llama_cpp.server`` imports beyond llama_cpp itself (the [server] extra).
_SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
_AVAILABILITY_CHECK = f"""
import importlib.util, sys
missing = [m for m in ("llama_cpp", *{_SERVER_MODULES!r}) if importlib.util.find_spec(m) is None]
print(" ".join(missing))
"""
_LOG_TAIL_CHARS = 4000

if TYPE_CHECKING:
    _Finalizer = weakref.finalize[[subprocess.Popen[bytes], float], "LlamaServer"]


class LlamaServerError(RuntimeError):
    """The server could not be started (it died or never became ready)."""


def server_python() -> str:
    """The interpreter used to run ``llama_cpp.server``."""
    return os.environ.get(PYTHON_ENV_VAR) or sys.executable


def realruntime_available() -> tuple[bool, str]:
    """Whether ``gguf`` and ``llama_cpp.server`` can be used, and if not, why not.

    Nothing is imported (llama_cpp loads a native library on import): for the test
    interpreter the module specs are looked up; for an interpreter named by
    ``LLMFACTORY_REALRUNTIME_PYTHON`` a short subprocess does the same.
    """
    missing = [m for m in ("gguf", "numpy") if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"not importable: {', '.join(missing)}"
    python = server_python()
    if python == sys.executable:
        server_missing = [
            m for m in ("llama_cpp", *_SERVER_MODULES) if importlib.util.find_spec(m) is None
        ]
        if not server_missing:
            spec = importlib.util.find_spec("llama_cpp")
            locations = (spec.submodule_search_locations or []) if spec else []
            if not any((Path(loc) / "server" / "__main__.py").is_file() for loc in locations):
                server_missing.append("llama_cpp.server")
    else:
        try:
            done = subprocess.run(
                [python, "-c", _AVAILABILITY_CHECK],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"{PYTHON_ENV_VAR}={python!r} is not usable: {exc}"
        server_missing = done.stdout.split()
    if server_missing:
        return False, f"not importable by {python}: {', '.join(server_missing)}"
    return True, ""


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The server leads its own session/process group (start_new_session=True), so the
    # group id is its PID.  Only signal while it is unreaped: the PID cannot be reused.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=10)


class LlamaServer:
    """A ``llama_cpp.server`` subprocess serving one model under the alias ``tiny``.

    ``model=None`` writes the tiny test model into a temporary directory (removed on
    ``stop``).  ``port=None`` picks a free port (retried if it was taken meanwhile).
    ``api_key`` makes the server require ``Authorization: Bearer API_KEY`` on every
    route (``--api_key``), as vLLM's and llama-server's ``--api-key`` do.
    """

    def __init__(
        self,
        model: Path | None = None,
        *,
        alias: str = MODEL_ALIAS,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = 512,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
        python: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.model = model
        self.alias = alias
        self.host = host
        self._requested_port = port
        self.n_ctx = n_ctx
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = extra_args
        self.python = python or server_python()
        self.api_key = api_key
        self.startup_seconds: float | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._workdir: Path | None = None
        self._finalizer: _Finalizer | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise LlamaServerError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without the ``/v1`` suffix, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise LlamaServerError("server not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        """The file that receives the server's stdout and stderr."""
        return None if self._workdir is None else self._workdir / "server.log"

    def log_text(self) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    # -- lifecycle ---------------------------------------------------------------------

    def command(self, model: Path, port: int) -> list[str]:
        return [
            self.python, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", self.alias,
            "--host", self.host,
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--interrupt_requests", "False",
            "--verbose", "False",
            *(("--api_key", self.api_key) if self.api_key else ()),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> LlamaServer:
        if self._proc is not None:
            raise LlamaServerError("server already started")
        self._workdir = Path(tempfile.mkdtemp(prefix="llmfactory-llama-"))
        try:
            if self.model is None:
                from .make_tiny_gguf import write_tiny_gguf

                self.model = write_tiny_gguf(self._workdir / "tiny.gguf")
            attempts = 1 if self._requested_port is not None else 3
            for attempt in range(attempts):
                port = self._requested_port or find_free_port(self.host)
                try:
                    self._spawn_and_wait(port)
                    return self
                except LlamaServerError:
                    lost_race = "address already in use" in self.log_text().lower()
                    self._reap()
                    if not lost_race or attempt == attempts - 1:
                        raise
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self, port: int) -> None:
        assert self.model is not None and self.log_path is not None
        self._log = self.log_path.open("wb")
        started = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(self.model, port),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._port = port
        # Kill the server even if the test process exits without calling stop().
        self._finalizer = weakref.finalize(self, _terminate, self._proc, 2.0)
        deadline = started + self.startup_timeout
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with httpx.Client(timeout=2.0, headers=headers) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise LlamaServerError(
                        f"llama_cpp.server exited with code {code} during startup:\n"
                        f"{self._log_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/v1/models").status_code == 200:
                        self.startup_seconds = time.monotonic() - started
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise LlamaServerError(
                        f"llama_cpp.server not ready after {self.startup_timeout:g} s:\n"
                        f"{self._log_tail()}"
                    )
                time.sleep(0.05)

    def _log_tail(self) -> str:
        text = self.log_text()
        return text[-_LOG_TAIL_CHARS:] if text else "(no output)"

    def _reap(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``stop_timeout``) and close the log.

        The reaped ``Popen`` is kept, so ``pid`` and ``returncode`` stay readable.
        """
        if self._proc is not None:
            _terminate(self._proc, self.stop_timeout)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the server now (e.g. mid-stream) and reap it; ``stop`` still cleans up."""
        if self._proc is not None:
            _signal_group(self._proc, signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server by PID (SIGTERM, wait, SIGKILL) and remove the temp directory."""
        self._reap()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
