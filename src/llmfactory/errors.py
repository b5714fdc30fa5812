"""The exceptions llmfactory raises.

Every error derives from :class:`LLMFactoryError`, and every message says what
happened and what to do about it::

    LLMFactoryError
    ├── InvalidIdentifierError      an identifier or host is malformed (also ValueError)
    ├── ModelNotFoundError          no model matches; carries ``suggestions`` (also LookupError)
    │   └── AmbiguousModelError     a bare name matches several models; carries ``candidates``
    ├── ConfigError                 the config file or an env var is unusable
    │   └── MissingAPIKeyError      a cloud model needs a key that is not set; names the variable
    ├── StoreError                  the registry cannot be opened or written; names the path
    ├── RuntimeUnavailableError     a runtime host did not answer a probe
    ├── LLMConnectionError          the connection failed, timed out or broke mid-response
    │   └── LLMTimeoutError         a connect/read timeout or deadline passed
    ├── LLMAPIError                 the server answered with an error (status, body, provider)
    │   ├── AuthenticationError     401/403
    │   ├── RateLimitError          429 (``retry_after`` when the server said)
    │   ├── ContextLengthExceededError  the prompt does not fit the model's context
    │   └── MalformedResponseError  the response is not what the protocol says (bad JSON, too long)
    ├── ExtensionError              an extension hook failed or refused the call
    ├── ConversationBusyError       a conversation got a message while still answering one
    └── NotSupportedError           the model or its protocol lacks the operation (also
                                    NotImplementedError), e.g. text completion on Anthropic

Errors raised while handling a third-party exception keep it as ``__cause__``.
:func:`redact_secrets` takes API keys out of an error a server's answer made
(a proxy quoting the key it was sent, say) before it reaches the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "AmbiguousModelError",
    "AuthenticationError",
    "ConfigError",
    "ContextLengthExceededError",
    "ConversationBusyError",
    "ExtensionError",
    "InvalidIdentifierError",
    "LLMAPIError",
    "LLMConnectionError",
    "LLMFactoryError",
    "LLMTimeoutError",
    "MalformedResponseError",
    "MissingAPIKeyError",
    "ModelNotFoundError",
    "NotSupportedError",
    "RateLimitError",
    "RuntimeUnavailableError",
    "StoreError",
    "redact_secrets",
]


class LLMFactoryError(Exception):
    """Root of every error llmfactory raises."""


class InvalidIdentifierError(LLMFactoryError, ValueError):
    """An identifier or host string is malformed.

    ``text`` is the input, ``part`` names the offending part (``model``,
    ``runtime``, ``host``, ``port``) and the message shows the expected form.
    """

    def __init__(self, message: str, *, text: str = "", part: str = "") -> None:
        super().__init__(message)
        self.text = text
        self.part = part


class ModelNotFoundError(LLMFactoryError, LookupError):
    """No model in the registry matches; ``suggestions`` holds the closest identifiers."""

    def __init__(self, identifier: str, suggestions: Sequence[str] = (), hint: str = "") -> None:
        self.identifier = identifier
        self.suggestions = list(suggestions)
        message = f"model {identifier!r} not found"
        if self.suggestions:
            message += "; did you mean: " + ", ".join(self.suggestions) + "?"
        message += hint or (
            " (run `llmfactory models` to list known models, or `llmfactory discover` "
            "to probe runtimes)"
        )
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.identifier, self.suggestions))


class AmbiguousModelError(ModelNotFoundError):
    """A bare model name matches several models (e.g. served by several hosts)."""

    def __init__(self, identifier: str, candidates: Sequence[str]) -> None:
        self.candidates = list(candidates)
        LLMFactoryError.__init__(
            self,
            f"model name {identifier!r} is ambiguous: it matches "
            + ", ".join(self.candidates)
            + "; use one of these full identifiers (model:runtime@host)",
        )
        self.identifier = identifier
        self.suggestions = list(candidates)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.identifier, self.candidates))


class ConfigError(LLMFactoryError):
    """The config file, an env var or a config value is unusable."""


class MissingAPIKeyError(ConfigError):
    """A cloud model needs an API key that is not configured."""

    def __init__(self, provider: str, env_var: str) -> None:
        self.provider = provider
        self.env_var = env_var
        super().__init__(
            f"no API key for {provider}: set the environment variable {env_var} "
            f"or `api_keys.{provider}` in the config file (`llmfactory paths` shows where)"
        )


class StoreError(LLMFactoryError):
    """The registry database cannot be opened, migrated or written."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class RuntimeUnavailableError(LLMFactoryError):
    """A runtime host did not answer, or answered as something else."""

    def __init__(self, message: str, *, host: str | None = None, runtime: str | None = None):
        super().__init__(message)
        self.host = host
        self.runtime = runtime


class LLMConnectionError(LLMFactoryError):
    """Connecting to the model's server failed, or the connection broke mid-response."""

    def __init__(self, message: str, *, url: str | None = None, provider: str | None = None):
        super().__init__(message)
        self.url = url
        self.provider = provider


class LLMTimeoutError(LLMConnectionError):
    """A connect or read timeout, or an overall deadline, passed."""


class LLMAPIError(LLMFactoryError):
    """The server answered with an error.

    ``status`` is the HTTP status (200 for an error sent mid-stream), ``body`` a
    bounded excerpt of what the server said, ``provider`` the runtime or vendor,
    ``error_type``/``code`` what the server called the error, and
    ``retry_after`` the seconds the server asked to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: str = "",
        provider: str | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
        code: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.provider = provider
        self.retry_after = retry_after
        self.error_type = error_type
        self.code = code
        self.url = url


class AuthenticationError(LLMAPIError):
    """The server refused the credentials (401/403)."""


class RateLimitError(LLMAPIError):
    """The server is rate limiting (429); ``retry_after`` says for how long when known."""


class ContextLengthExceededError(LLMAPIError):
    """The prompt and requested output do not fit in the model's context window."""


class MalformedResponseError(LLMAPIError):
    """The server answered, but with something the protocol does not allow.

    Raised for a stream line or event that is not valid JSON (or not a JSON
    object), a stream cut off in the middle of a line, a line longer than the
    reader's bound, or a body larger than the caller's cap. It is an
    :class:`LLMAPIError` because the server did answer; ``status`` is the HTTP
    status of that answer, which is 200 when the body of a successful
    response is what turned out to be malformed.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 200,
        body: str = "",
        provider: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body, provider=provider, url=url)


class ExtensionError(LLMFactoryError):
    """An extension hook raised; ``extension`` names it and ``hook`` says which hook."""

    def __init__(self, message: str, *, extension: str = "", hook: str = "") -> None:
        super().__init__(message)
        self.extension = extension
        self.hook = hook


class ConversationBusyError(LLMFactoryError, RuntimeError):
    """A conversation was asked to send while another of its calls is still running.

    A conversation answers one message at a time; await the running call (or
    close its stream) first, or use ``complete()`` for independent concurrent calls.
    """


class NotSupportedError(LLMFactoryError, NotImplementedError):
    """The model, or the protocol it is spoken to in, does not offer an operation.

    ``operation`` names it (``text_completion``); ``provider`` is the runtime or
    service. Raised before anything is sent.
    """

    def __init__(self, message: str, *, operation: str = "", provider: str | None = None):
        super().__init__(message)
        self.operation = operation
        self.provider = provider


REDACTED = "[redacted]"
_SECRET_MIN_CHARS = 8  # shorter values are not keys, and replacing them would garble text
_TEXT_ATTRIBUTES = ("body", "url", "text")


def redact_secrets(error: BaseException, secrets: Iterable[str | None]) -> BaseException:
    """Replace every occurrence of ``secrets`` in ``error`` with ``[redacted]``, in place.

    Rewrites the message and the text attributes (``body``, ``url``) of ``error``
    and of the llmfactory errors along its ``__cause__`` / ``__context__`` chain;
    values shorter than 8 characters are ignored. Returns ``error``.
    """
    keys = sorted({s for s in secrets if s and len(s) >= _SECRET_MIN_CHARS}, key=len,
                  reverse=True)
    if not keys:
        return error
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, LLMFactoryError):
            current.args = tuple(
                _redact(arg, keys) if isinstance(arg, str) else arg for arg in current.args
            )
            for name in _TEXT_ATTRIBUTES:
                value = getattr(current, name, None)
                if isinstance(value, str):
                    setattr(current, name, _redact(value, keys))
        current = current.__cause__ or current.__context__
    return error


def _redact(text: str, keys: Sequence[str]) -> str:
    for key in keys:
        if key in text:
            text = text.replace(key, REDACTED)
    return text

