"""The sync facade's machinery: one shared blocking portal, cancellable tasks, sync streams.

Synchronous callers run the very same async code on one event loop in a daemon
thread (an anyio :class:`~anyio.from_thread.BlockingPortal`), started on first
use and stopped, after closing its pooled HTTP clients, when the last
conversation using it is closed. :class:`PortalTask` runs one call there so
that Ctrl-C in the calling thread cancels it cleanly; :class:`SyncChunkStream`
hands a streamed answer over to the calling thread chunk by chunk.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import queue
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from llmfactory.api.transport import close_clients
from llmfactory.messages import ChunkResponse, CompleteResponse
from llmfactory.streams import ChunkStream

__all__ = ["SHARED_PORTAL", "PortalTask", "SyncChunkStream", "shared_portal_running"]

T = TypeVar("T")


class _SharedPortal:
    """One blocking portal (an event loop in a daemon thread) shared by every sync caller.

    Started by the first :meth:`acquire`; when the last lease is released its
    pooled HTTP clients are closed and the loop stops.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases = 0
        self._cm: Any = None
        self._portal: BlockingPortal | None = None
        self._thread_id: int | None = None
        self._atexit = False

    def acquire(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                cm = start_blocking_portal("asyncio", name="llmfactory-sync")
                portal = cm.__enter__()
                self._cm, self._portal = cm, portal
                self._thread_id = portal.call(threading.get_ident)
                if not self._atexit:
                    atexit.register(self._stop_at_exit)
                    self._atexit = True
            self._leases += 1
            return self._portal

    def _stop_at_exit(self) -> None:
        """At interpreter exit, stop the portal that conversations not closed still hold.

        Left to the garbage collector, anyio's portal context manager would wait for
        the portal's daemon thread while the interpreter finalises, when that thread
        can no longer run: the process would hang instead of exiting. Calls still
        running there are cancelled.
        """
        with self._lock:
            cm, portal = self._cm, self._portal
            self._cm = self._portal = self._thread_id = None
            self._leases = 0
        if portal is None:
            return
        with contextlib.suppress(Exception):
            portal.call(close_clients)
        with contextlib.suppress(Exception):
            portal.call(portal.stop, True)
        with contextlib.suppress(Exception):
            cm.__exit__(None, None, None)

    def release(self) -> None:
        if threading.get_ident() == self._thread_id:
            # Never stop the loop from inside itself: do it from another thread.
            threading.Thread(target=self.release, daemon=True).start()
            return
        with self._lock:
            if self._leases == 0:
                return
            self._leases -= 1
            if self._leases or self._portal is None:
                return
            cm, portal = self._cm, self._portal
            self._cm = self._portal = self._thread_id = None
            try:
                portal.call(close_clients)
            finally:
                cm.__exit__(None, None, None)

    @property
    def running(self) -> bool:
        """True while the portal's thread runs."""
        return self._portal is not None


SHARED_PORTAL = _SharedPortal()
"""The portal every sync caller shares."""

_END: Any = object()


class PortalTask:
    """A coroutine run on the sync portal that the calling thread can cancel at any moment.

    Unlike cancelling the portal's future, :meth:`cancel` works even when the
    calling thread is interrupted (Ctrl-C) while the task is being started,
    and it waits until the task has let go.
    """

    def __init__(self, portal: BlockingPortal, func: Callable[[], Awaitable[T]]) -> None:
        self._portal = portal
        self._func = func
        self._lock = threading.Lock()
        self._scope: anyio.CancelScope | None = None
        self._cancelled = False
        self._future: concurrent.futures.Future[Any] | None = None
        self.done = threading.Event()

    def start(self) -> None:
        """Schedule the coroutine on the portal's loop."""
        self._future = self._portal.start_task_soon(self._run)

    async def _run(self) -> Any:
        try:
            with anyio.CancelScope() as scope:
                with self._lock:
                    self._scope = scope
                    if self._cancelled:
                        scope.cancel()
                return await self._func()
            return None  # cancelled by cancel(): nobody waits for a result
        finally:
            self.done.set()

    def result(self) -> Any:
        """Wait for the coroutine's result (or exception)."""
        assert self._future is not None
        return self._future.result()

    def cancel(self, *, wait: bool = True) -> None:
        """Cancel the coroutine (also before it started) and, with ``wait``, wait for it."""
        with self._lock:
            self._cancelled = True
            scope = self._scope
        if scope is not None and not self.done.is_set():
            # RuntimeError: the portal has stopped, or this is the portal's own thread.
            with contextlib.suppress(RuntimeError):
                self._portal.call(scope.cancel)
        if wait:
            self.done.wait(_CANCEL_WAIT)


_CANCEL_WAIT = 30.0  # seconds; a task that never started (stopped portal) must not hang us


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def _pump(stream: ChunkStream, out: queue.SimpleQueue[Any]) -> None:
    """Read ``stream`` on the portal's loop into ``out``, then ``_END`` or a ``_Failure``."""
    try:
        async for chunk in stream:
            out.put(chunk)
        out.put(_END)
    except BaseException as exc:
        out.put(_Failure(exc))
        if not isinstance(exc, Exception):
            raise
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()


class SyncChunkStream:
    """A streamed answer for synchronous code: an iterator of :class:`ChunkResponse`.

    The chunks are read on the sync portal's event loop as they arrive and
    handed over through a queue. Use it as a context manager (or call
    :meth:`close`) so that stopping early, or Ctrl-C, cancels the request::

        with llm.stream_user_message_sync("Hi") as stream:
            for chunk in stream:
                print(chunk.content, end="", flush=True)
    """

    def __init__(self, portal: BlockingPortal, stream: ChunkStream) -> None:
        self._stream = stream
        stream._state.defer_commit = True
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._finished = False
        # The task must not refer back to this object, so that dropping it runs __del__.
        self._task = PortalTask(portal, functools.partial(_pump, stream, self._queue))
        try:
            self._task.start()
        except BaseException:
            self._task.cancel()
            raise

    @property
    def response(self) -> CompleteResponse | None:
        """The whole answer, once the stream is complete; None before."""
        return self._stream.response

    def __iter__(self) -> SyncChunkStream:
        return self

    def __next__(self) -> ChunkResponse:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.exc
        chunk: ChunkResponse = item
        if chunk.is_complete:
            self._stream._state.commit_deferred()
        return chunk

    def close(self) -> None:
        """Cancel the request if it is still running and wait until it has let go.

        The history is left as it was unless the last chunk had been taken.
        """
        self._finished = True
        if not self._task.done.is_set():
            self._task.cancel()

    def __enter__(self) -> SyncChunkStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        task = getattr(self, "_task", None)
        if task is not None and not task.done.is_set():
            task.cancel(wait=False)  # dropped unfinished: stop reading (no commit happens)


def shared_portal_running() -> bool:
    """True while the shared sync portal's thread runs (for tests and diagnostics)."""
    return SHARED_PORTAL.running
