"""LLMExtension: code that hooks into every call of a conversation, and the extension registry.

An extension is an object with some of these hooks (each may be a plain
function or ``async def``; leave out the ones you do not need)::

    on_register(llm)             added to a conversation
    before_invoke(call)          before any network I/O: rewrite call.messages / call.config /
                                 call.tools, or refuse the call by raising
    on_chunk(call, chunk)        each streamed chunk (streaming only; keep it cheap); may return
                                 a replacement chunk
    after_invoke(call, response) the final response (usage, cost, latency), before the history
                                 is committed; may return a replacement response
    on_error(call, error)        the call failed (cancellation is not reported)
    on_close(llm)                the conversation is being closed: flush what you buffer
    on_unregister(llm)           removed from a conversation

Semantics (see ``docs/extensions.md``):

* Extensions run in registration order, for every hook.
* **Refusal**: any exception raised by ``before_invoke`` stops the call before
  it reaches the network; it reaches the caller *as it was raised* (not
  wrapped), the history is unchanged, and every extension's ``on_error`` sees
  it. Raise :class:`~llmfactory.errors.ExtensionError` (``self.refuse(reason)``)
  when you want callers to catch refusals as one type.
* **Observing hooks** (``on_chunk``, ``after_invoke``): an exception is logged
  as an :class:`~llmfactory.errors.ExtensionError` on the
  ``llmfactory.extensions`` logger and the call goes on, unless the extension
  sets ``critical = True``: then the call fails with that ``ExtensionError``
  (whose ``__cause__`` is the original exception). ``on_error``, ``on_close``
  and ``on_unregister`` failures are always only logged; an ``on_register``
  failure is raised to whoever registers, and the extension is not added.
* Sync hooks are called directly (no coroutine is created for them); which
  extensions override which hook is worked out once per change of the
  extension list, so an extension without ``on_chunk`` costs nothing per chunk. A hook
  set to None on an instance counts as absent (how an instance switches one off).
* ``register_extension`` is synchronous: an ``async def on_register`` (or
  ``on_unregister``) runs at the start of the conversation's next call, or at its
  close; an async ``on_close`` run by the synchronous ``close()`` runs on the shared
  sync portal.

Named extensions come from the built-ins and from the entry-point group
``llmfactory.extensions`` (read lazily, on the first name that is not built
in); :func:`load_extension` turns a name into the class (or instance) it
names, and the config file's ``[extensions] enabled = [...]`` list does the
same for every conversation the factory creates.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, Union

from llmfactory.errors import ConfigError, ExtensionError
from llmfactory.messages import ChunkResponse, CompleteResponse

if TYPE_CHECKING:
    from llmfactory.base_llm import BaseLLM, Call
    from llmfactory.extensions.token_usage import UsageLedger, UsageTotals
    from llmfactory.factory import LLMFactory

__all__ = [
    "ENTRY_POINT_GROUP",
    "ExtensionLike",
    "LLMExtension",
    "extension_names",
    "load_extension",
]

logger = logging.getLogger("llmfactory.extensions")

ENTRY_POINT_GROUP = "llmfactory.extensions"
"""The entry-point group through which extensions (built-in and third-party) are named."""

# The built-ins, as their entry points name them (see pyproject.toml); used even
# when the package metadata is stale (a source checkout that was never installed).
_BUILTINS: dict[str, str] = {
    "token_usage": "llmfactory.extensions.token_usage:TokenUsageTrackingExtension",
    "logging": "llmfactory.extensions.logging_ext:LoggingExtension",
    "rate_limit": "llmfactory.extensions.rate_limit:RateLimitExtension",
    "redaction": "llmfactory.extensions.redaction:RedactionExtension",
    "otel": "llmfactory.extensions.otel:OpenTelemetryExtension",
}

E = TypeVar("E")

#: What ``register_extension`` accepts: an instance, a class (instantiated without
#: arguments) or a registered name.
ExtensionLike = Union["LLMExtension", type, str, Any]


class LLMExtension:
    """Base class for extensions: every hook is a no-op, override the ones you need.

    Subclassing is optional (any object with some of the hook methods works),
    but the base class lets the dispatcher skip the hooks you did not
    override. Hooks may be ``def`` or ``async def``.

    Class attributes:

    * ``name`` — how the extension is named in logs and errors (defaults to
      the class name; the registry name of a packaged extension is its entry
      point's name);
    * ``critical`` — when True, a failure in an observing hook fails the call
      with :class:`~llmfactory.errors.ExtensionError` instead of being logged;
    * ``unique`` — when True, a conversation holds at most one instance of the
      class: registering another replaces the first, in its place.
    """

    name: str = "LLMExtension"
    critical: bool = False
    unique: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def on_register(self, llm: BaseLLM) -> Awaitable[None] | None:
        """Called when the extension is added to ``llm``."""
        return None

    def on_unregister(self, llm: BaseLLM) -> Awaitable[None] | None:
        """Called when the extension is removed from ``llm``."""
        return None

    def before_invoke(self, call: Call) -> Awaitable[None] | None:
        """Called before the request is sent: rewrite ``call`` in place, or raise to refuse."""
        return None

    def on_chunk(
        self, call: Call, chunk: ChunkResponse
    ) -> Awaitable[ChunkResponse | None] | ChunkResponse | None:
        """Called for each streamed chunk; return a replacement chunk, or None to keep it."""
        return None

    def after_invoke(
        self, call: Call, response: CompleteResponse
    ) -> Awaitable[CompleteResponse | None] | CompleteResponse | None:
        """Called with the final response; return a replacement, or None to keep it."""
        return None

    def on_error(self, call: Call, error: Exception) -> Awaitable[None] | None:
        """Called when the call failed (including a refusal by any ``before_invoke``)."""
        return None

    def on_close(self, llm: BaseLLM) -> Awaitable[None] | None:
        """Called when ``llm`` is closed (``close()`` / ``aclose()``): flush buffered state."""
        return None

    def refuse(self, reason: str) -> NoReturn:
        """Refuse the call from ``before_invoke``: raise :class:`ExtensionError` with ``reason``."""
        raise ExtensionError(reason, extension=self.name, hook="before_invoke")

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self.name!r}>"


def _name_of(extension: Any) -> str:
    name = getattr(extension, "name", None)
    return name if isinstance(name, str) and name else type(extension).__qualname__


def _is_critical(extension: Any) -> bool:
    return bool(getattr(extension, "critical", False))


# --------------------------------------------------------------------------- dispatch

_CALL_HOOKS = ("before_invoke", "on_chunk", "after_invoke", "on_error")

# (extension, bound hook, hook is a coroutine function)
_Hook = tuple[Any, Callable[..., Any], bool]


def _hook(extension: Any, name: str) -> _Hook | None:
    """The bound hook ``name`` of ``extension``, or None when it has none (or the no-op)."""
    if isinstance(extension, LLMExtension) and getattr(type(extension), name, None) is getattr(
        LLMExtension, name
    ) and name not in getattr(extension, "__dict__", ()):
        return None
    fn = getattr(extension, name, None)
    if fn is None or not callable(fn):
        return None
    return (extension, fn, _is_coroutine_function(fn))


def _is_coroutine_function(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return False
    # a callable object whose __call__ is async
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


class _Plan:
    """Which extensions override which hook, for one state of a conversation's list."""

    __slots__ = ("after", "before", "chunk", "error", "extensions")

    def __init__(self, extensions: tuple[Any, ...]) -> None:
        self.extensions = extensions
        hooks: dict[str, list[_Hook]] = {name: [] for name in _CALL_HOOKS}
        for extension in extensions:
            for name in _CALL_HOOKS:
                found = _hook(extension, name)
                if found is not None:
                    hooks[name].append(found)
        self.before = tuple(hooks["before_invoke"])
        self.chunk = tuple(hooks["on_chunk"])
        self.after = tuple(hooks["after_invoke"])
        self.error = tuple(hooks["on_error"])


class _LLMState:
    """Per-conversation extension bookkeeping (kept in ``BaseLLM._extension_state``)."""

    __slots__ = ("pending", "plan")

    def __init__(self) -> None:
        self.plan: _Plan | None = None
        # async on_register / on_unregister hooks, run at the start of the next call
        self.pending: list[tuple[Any, str, Callable[..., Awaitable[Any]], Any]] = []


def _state(llm: BaseLLM) -> _LLMState:
    state: _LLMState | None = llm._extension_state
    if state is None:
        state = llm._extension_state = _LLMState()
    return state


def _plan(llm: BaseLLM) -> _Plan:
    """The dispatch plan for ``llm``'s extensions, rebuilt only when the list changed."""
    state = _state(llm)
    plan = state.plan
    current = llm.extensions
    if plan is not None:
        known = plan.extensions
        if len(known) == len(current) and all(a is b for a, b in zip(known, current, strict=True)):
            return plan
    plan = state.plan = _Plan(tuple(current))
    return plan


def _failed(extension: Any, hook: str, exc: BaseException, *, may_raise: bool) -> None:
    """Log an observing hook's failure, or raise it wrapped when the extension is critical."""
    name = _name_of(extension)
    error = ExtensionError(
        f"extension {name!r} failed in {hook}: {type(exc).__name__}: {exc}",
        extension=name,
        hook=hook,
    )
    if may_raise and _is_critical(extension):
        raise error from exc
    error.__cause__ = exc
    logger.warning("%s (the call goes on)", error, exc_info=exc)


async def _run_pending(llm: BaseLLM, state: _LLMState) -> None:
    pending, state.pending = state.pending, []
    for extension, hook, fn, arg in pending:
        try:
            await fn(arg)
        except Exception as exc:
            _failed(extension, hook, exc, may_raise=hook == "on_register")


async def run_before_invoke(llm: BaseLLM, call: Call) -> None:
    """Run every ``before_invoke`` in order; an exception (a refusal) propagates as is."""
    state = _state(llm)
    if state.pending:
        await _run_pending(llm, state)
    for _extension, fn, is_async in _plan(llm).before:
        result = fn(call)
        if is_async or (result is not None and inspect.isawaitable(result)):
            await result


def wants_chunks(llm: BaseLLM) -> bool:
    """True when some extension of ``llm`` overrides ``on_chunk``."""
    return bool(_plan(llm).chunk)


async def run_on_chunk(llm: BaseLLM, call: Call, chunk: ChunkResponse) -> ChunkResponse:
    """Pass ``chunk`` through every ``on_chunk`` hook (the plan of the call's start)."""
    state: _LLMState | None = llm._extension_state
    plan = state.plan if state is not None and state.plan is not None else _plan(llm)
    for extension, fn, is_async in plan.chunk:
        try:
            result = fn(call, chunk)
            if is_async or (
                result is not None
                and result.__class__ is not ChunkResponse
                and inspect.isawaitable(result)
            ):
                result = await result
        except Exception as exc:
            _failed(extension, "on_chunk", exc, may_raise=True)
            continue
        if result is not None and isinstance(result, ChunkResponse):
            chunk = result
    return chunk


async def run_after_invoke(
    llm: BaseLLM, call: Call, response: CompleteResponse
) -> CompleteResponse:
    """Pass ``response`` through every ``after_invoke`` hook; return the (replaced) response."""
    for extension, fn, is_async in _plan(llm).after:
        try:
            result = fn(call, response)
            if is_async or (
                result is not None
                and not isinstance(result, CompleteResponse)
                and inspect.isawaitable(result)
            ):
                result = await result
        except Exception as exc:
            _failed(extension, "after_invoke", exc, may_raise=True)
            continue
        if isinstance(result, CompleteResponse):
            response = result
    return response


async def run_on_error(llm: BaseLLM, call: Call, error: Exception) -> None:
    """Tell every extension that the call failed; their own failures are only logged."""
    for extension, fn, is_async in _plan(llm).error:
        try:
            result = fn(call, error)
            if is_async or (result is not None and inspect.isawaitable(result)):
                await result
        except Exception as exc:
            _failed(extension, "on_error", exc, may_raise=False)


async def aclose_extensions(llm: BaseLLM) -> None:
    """Run pending lifecycle hooks and every ``on_close`` (from ``aclose()``)."""
    if llm._closed or not llm.extensions:
        return
    state = _state(llm)
    if state.pending:
        await _run_pending(llm, state)
    for extension in list(llm.extensions):
        found = _hook(extension, "on_close")
        if found is None:
            continue
        try:
            result = found[1](llm)
            if found[2] or (result is not None and inspect.isawaitable(result)):
                await result
        except Exception as exc:
            _failed(extension, "on_close", exc, may_raise=False)


def close_extensions(llm: BaseLLM) -> None:
    """Run every ``on_close`` from synchronous ``close()`` (async ones on the sync portal)."""
    if llm._closed or not llm.extensions:
        return
    state = _state(llm)
    needs_loop = bool(state.pending) or any(
        (found := _hook(e, "on_close")) is not None and found[2] for e in llm.extensions
    )
    if needs_loop:
        try:
            llm._run_sync(lambda: aclose_extensions(llm))
        except Exception as exc:  # pragma: no cover - the portal could not start
            logger.warning("closing the extensions of %s failed: %s", llm.identifier, exc)
        return
    for extension in list(llm.extensions):
        found = _hook(extension, "on_close")
        if found is None:
            continue
        try:
            found[1](llm)
        except Exception as exc:
            _failed(extension, "on_close", exc, may_raise=False)


# --------------------------------------------------------------------------- registration


def _instantiate(target: Any) -> Any:
    if isinstance(target, str):
        target = load_extension(target)
    if isinstance(target, type):
        try:
            return target()
        except TypeError as exc:
            raise ExtensionError(
                f"cannot create the extension {target.__qualname__}() without arguments "
                f"({exc}); register an instance instead",
                extension=target.__qualname__,
                hook="on_register",
            ) from exc
    return target


def _lifecycle(llm: BaseLLM, extension: Any, hook: str) -> None:
    found = _hook(extension, hook)
    if found is None:
        return
    _ext, fn, is_async = found
    if is_async:
        _state(llm).pending.append((extension, hook, fn, llm))
        return
    result = fn(llm)
    if result is not None and inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        logger.warning(
            "%s.%s returned an awaitable from a plain function; make it `async def`",
            _name_of(extension),
            hook,
        )


def register_extension(llm: BaseLLM, extension: ExtensionLike) -> Any:
    """Add ``extension`` (instance, class or name) to ``llm`` (``BaseLLM.register_extension``)."""
    instance = _instantiate(extension)
    current = llm.extensions
    if any(e is instance for e in current):
        return instance
    replaced: Any = None
    if getattr(instance, "unique", False):
        for e in current:
            if type(e) is type(instance):
                replaced = e
                break
    try:
        _lifecycle(llm, instance, "on_register")
    except ExtensionError:
        raise
    except Exception as exc:
        name = _name_of(instance)
        raise ExtensionError(
            f"extension {name!r} failed in on_register: {type(exc).__name__}: {exc}",
            extension=name,
            hook="on_register",
        ) from exc
    if replaced is not None:
        current[current.index(replaced)] = instance
        _unregistered(llm, replaced)
    else:
        current.append(instance)
    return instance


def _unregistered(llm: BaseLLM, extension: Any) -> None:
    try:
        _lifecycle(llm, extension, "on_unregister")
    except Exception as exc:
        _failed(extension, "on_unregister", exc, may_raise=False)


def _matches(extension: Any, target: Any) -> bool:
    if extension is target:
        return True
    if isinstance(target, type):
        return isinstance(extension, target)
    if isinstance(target, str):
        return _name_of(extension) == target or _registered_name(extension) == target
    return False


def _registered_name(extension: Any) -> str | None:
    cls = type(extension)
    path = f"{cls.__module__}:{cls.__qualname__}"
    for name, value in _BUILTINS.items():
        if value == path:
            return name
    return None


def unregister_extension(llm: BaseLLM, extension: ExtensionLike) -> bool:
    """Remove matching extensions from ``llm``; see ``BaseLLM.unregister_extension``."""
    removed = [e for e in llm.extensions if _matches(e, extension)]
    for e in removed:
        llm.extensions.remove(e)
        _unregistered(llm, e)
    return bool(removed)


def get_extension(llm: BaseLLM, target: type[E] | str) -> E | None:
    """The first extension of ``llm`` that is an instance of ``target`` (or is named so)."""
    for e in llm.extensions:
        if _matches(e, target):
            found: E = e
            return found
    return None


def usage_of(llm: BaseLLM) -> UsageTotals:
    """``llm.usage``: the totals of its token-usage tracker (zeros without one)."""
    from llmfactory.extensions.token_usage import TokenUsageTrackingExtension, UsageTotals

    tracker = get_extension(llm, TokenUsageTrackingExtension)
    return tracker.totals if tracker is not None else UsageTotals()


# --------------------------------------------------------------------------- named extensions

_lock = threading.RLock()
_entry_points: dict[str, tuple[str, Any]] | None = None
_loaded: dict[str, Any] = {}


def _scan_entry_points() -> dict[str, tuple[str, Any]]:
    from importlib.metadata import entry_points

    found: dict[str, tuple[str, Any]] = {}
    try:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            found.setdefault(ep.name, (ep.value, ep))
    except Exception as exc:  # broken metadata on sys.path must not break the others
        logger.warning("cannot read the %s entry points: %s", ENTRY_POINT_GROUP, exc)
    return found


def _declared(*, rescan: bool) -> dict[str, tuple[str, Any]]:
    global _entry_points
    with _lock:
        if _entry_points is None or rescan:
            _entry_points = _scan_entry_points()
        return _entry_points


def extension_names(*, rescan: bool = False) -> list[str]:
    """The names :func:`load_extension` knows: the built-ins and installed entry points."""
    return sorted(set(_BUILTINS) | set(_declared(rescan=rescan)))


def load_extension(name: str) -> Any:
    """The extension class (or instance) registered under ``name``.

    Built-in names (``token_usage``, ``logging``, ``rate_limit``, ``redaction``)
    are found without reading package metadata; other names are looked up in
    the ``llmfactory.extensions`` entry points (scanned again once when a name
    is not found, so a package installed while the process runs is seen).

    Raises:
        ConfigError: no extension has that name (the message lists the installed
            ones), or its entry point cannot be loaded.
    """
    with _lock:
        if name in _loaded:
            return _loaded[name]
    builtin = _BUILTINS.get(name)
    if builtin is not None:
        module_name, _, attr = builtin.partition(":")
        obj: Any = getattr(importlib.import_module(module_name), attr)
    else:
        declared = _declared(rescan=False).get(name)
        if declared is None:
            declared = _declared(rescan=True).get(name)
        if declared is None:
            raise ConfigError(
                f"unknown extension {name!r}; installed: {', '.join(extension_names())} "
                f"(packages add extensions through the {ENTRY_POINT_GROUP!r} entry-point "
                "group; check the [extensions] enabled list in the config file)"
            )
        value, ep = declared
        try:
            obj = ep.load()
        except Exception as exc:
            raise ConfigError(
                f"cannot load the extension {name!r} ({value}): {type(exc).__name__}: {exc}; "
                "is the package that provides it installed in this environment?"
            ) from exc
    with _lock:
        _loaded.setdefault(name, obj)
        return _loaded[name]


def _forget_loaded() -> None:
    """Forget loaded names and the entry-point scan (for tests)."""
    global _entry_points
    with _lock:
        _loaded.clear()
        _entry_points = None


# --------------------------------------------------------------------------- factory defaults


@dataclass(frozen=True, slots=True)
class _Default:
    target: Any
    runtimes: frozenset[str] | None
    providers: frozenset[str] | None

    def applies_to(self, llm: BaseLLM) -> bool:
        model = llm.model
        if self.runtimes is not None and model.runtime not in self.runtimes:
            return False
        return self.providers is None or model.provider in self.providers


def _names(values: str | Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return frozenset(v.lower() for v in values)


class FactoryExtensions:
    """A factory's default extensions and its usage ledger (``LLMFactory._extensions``)."""

    def __init__(self, factory: LLMFactory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._defaults: list[_Default] = []
        self._ledger: UsageLedger | None = None

    @property
    def ledger(self) -> UsageLedger:
        """Where the factory's conversations record usage (created on first use)."""
        ledger = self._ledger
        if ledger is None:
            from llmfactory.extensions.token_usage import UsageLedger

            with self._lock:
                if self._ledger is None:
                    factory = self._factory
                    self._ledger = UsageLedger(lambda: factory._store)
                ledger = self._ledger
        return ledger

    def register(
        self,
        extension: ExtensionLike,
        *,
        runtimes: str | Iterable[str] | None = None,
        providers: str | Iterable[str] | None = None,
    ) -> None:
        """Add a default; a name is checked now (an unknown one raises ConfigError)."""
        if isinstance(extension, str):
            load_extension(extension)
        with self._lock:
            self._defaults.append(_Default(extension, _names(runtimes), _names(providers)))

    def unregister(self, extension: ExtensionLike) -> bool:
        """Remove matching defaults (by identity, class or name); True when one was there."""
        with self._lock:
            keep = [
                d
                for d in self._defaults
                if not (d.target is extension or d.target == extension)
            ]
            removed = len(keep) != len(self._defaults)
            self._defaults = keep
        return removed

    def attach(self, llm: BaseLLM, enabled: Iterable[str] = ()) -> None:
        """Register the defaults on a new conversation: usage tracking, the config file's
        ``[extensions] enabled`` names, then the factory's code-registered defaults."""
        from llmfactory.extensions.token_usage import TokenUsageTrackingExtension, bind_ledger

        bind_ledger(llm, self.ledger)
        llm.register_extension(TokenUsageTrackingExtension())
        for name in enabled:
            target = load_extension(name)
            if isinstance(target, type) and getattr(target, "unique", False) and any(
                type(e) is target for e in llm.extensions
            ):
                continue  # e.g. "token_usage" named again: it is already there
            llm.register_extension(target)
        with self._lock:
            defaults = list(self._defaults)
        for default in defaults:
            if default.applies_to(llm):
                llm.register_extension(default.target)

    def usage(self) -> UsageTotals:
        """Totals of every call made by this factory's conversations in this process."""
        return self.ledger.totals

    def flush(self, timeout: float | None = None) -> bool:
        """Write pending usage rows; True when nothing is left pending."""
        ledger = self._ledger
        return True if ledger is None else ledger.flush(timeout)
