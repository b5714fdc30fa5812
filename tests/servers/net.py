"""Small network helpers for tests: free and refused ports, a black-hole server."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator
from types import TracebackType

__all__ = ["BlackholeServer", "blackhole_server", "free_port", "refused_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read it, release it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def refused_port(host: str = "127.0.0.1") -> int:
    """A port with nothing listening: connecting to it is refused (RST) at once."""
    return free_port(host)


class BlackholeServer:
    """Accepts TCP connections and never answers (no bytes, no close) until stopped.

    ``connections`` counts accepted connections. On exit every accepted socket and
    the listener are closed. Use with ``with BlackholeServer() as bh: bh.url``.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._listener: socket.socket | None = None
        self._accepted: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.port = 0

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        h = f"[{self._host}]" if ":" in self._host else self._host
        return f"{h}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def connections(self) -> int:
        """How many connections were accepted."""
        with self._lock:
            return len(self._accepted)

    def start(self) -> BlackholeServer:
        """Listen and start accepting."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.bind((self._host, 0))
            listener.listen(1024)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="blackhole", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        listener = self._listener
        assert listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for _ in sel.select(timeout=0.02):
                    with contextlib.suppress(BlockingIOError, OSError):
                        conn, _addr = listener.accept()
                        with self._lock:
                            self._accepted.append(conn)

    def stop(self) -> None:
        """Close every connection and the listener."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            for conn in self._accepted:
                conn.close()
            self._accepted.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> BlackholeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def blackhole_server(host: str = "127.0.0.1") -> Iterator[BlackholeServer]:
    """A :class:`BlackholeServer` for the duration of the ``with`` block."""
    with BlackholeServer(host) as server:
        yield server
