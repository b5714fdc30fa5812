"""Talking commands: ``prompt`` (one question, streamed) and ``chat`` (an interactive conversation).

Both stream the answer to stdout as it arrives and keep everything else —
reasoning, usage, notices — on stderr, so that ``llmfactory prompt ID "…" > out.txt``
captures just the answer.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, TextIO

import click

from llmfactory.cli import cli, get_factory, print_json
from llmfactory.errors import LLMFactoryError

if TYPE_CHECKING:
    from llmfactory.base_llm import BaseLLM
    from llmfactory.messages import CompleteResponse, Usage

__all__: list[str] = []

_CHAT_HELP = """\
/system TEXT   set the system prompt (/system alone shows it)
/reset         forget the conversation (the system prompt stays)
/usage         tokens and cost so far
/exit          leave (or Ctrl-D); Ctrl-C stops the current answer"""


def _make_llm(ctx: click.Context, identifier: str, overrides: dict[str, Any]) -> BaseLLM:
    from llmfactory.config import LLMConfig

    factory = get_factory(ctx)
    config = LLMConfig(**{k: v for k, v in overrides.items() if v is not None})
    llm: BaseLLM = factory.create_llm(identifier, config)
    return llm


def _usage_line(response: CompleteResponse) -> str:
    usage = response.usage
    parts = [response.model or "?"]
    if usage is not None:
        approx = "~" if usage.estimated else ""
        parts.append(
            f"{approx}{usage.prompt_tokens} prompt + {approx}{usage.completion_tokens} "
            "completion tokens"
        )
        if usage.cost_usd:
            parts.append(f"${usage.cost_usd:.6f}")
    parts.append(f"{response.latency_ms / 1000:.2f} s")
    if response.finish_reason not in (None, "stop"):
        parts.append(f"finish: {response.finish_reason}")
    return "[" + ", ".join(parts) + "]"


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def _stream_answer(
    llm: BaseLLM, text: str | None, images: tuple[str, ...] = ()
) -> CompleteResponse:
    """Stream one answer to stdout (reasoning to stderr); return the whole response."""
    out, err = sys.stdout, sys.stderr
    last = ""
    thinking = False
    with llm.stream_user_message_sync(text, images=list(images) or None) as stream:
        for chunk in stream:
            if chunk.reasoning:
                if not thinking:
                    _write(err, "(thinking) ")
                    thinking = True
                _write(err, chunk.reasoning)
            if chunk.content:
                if thinking:
                    _write(err, "\n")
                    thinking = False
                _write(out, chunk.content)
                last = chunk.content
        for call in (stream.response.tool_calls if stream.response else ()):
            _write(err, f"\n(tool call {call.name}({call.arguments_json}))")
    if last and not last.endswith("\n"):
        _write(out, "\n")
    response = stream.response
    assert response is not None  # the stream completed
    return response


@cli.command("prompt")
@click.argument("identifier")
@click.argument("text", required=False)
@click.option("--system", "-s", "system", help="A system prompt.")
@click.option("--temperature", "-t", type=float, help="Sampling temperature.")
@click.option("--max-tokens", "-m", type=int, help="Most tokens to generate.")
@click.option(
    "--image",
    "-i",
    "images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="An image file to send with the prompt (vision models); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole response as JSON.")
@click.pass_context
def prompt_command(
    ctx: click.Context,
    identifier: str,
    text: str | None,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
    images: tuple[str, ...],
    as_json: bool,
) -> None:
    """Ask IDENTIFIER one question and stream the answer to stdout.

    TEXT defaults to standard input (also with "-"). Usage goes to stderr;
    with --json, stdout gets one JSON object (content, reasoning, tool calls,
    finish reason, usage, latency, model) instead.
    """
    if text is None or text == "-":
        text = sys.stdin.read()
    if not text.strip() and not images:
        raise click.UsageError("nothing to send: give TEXT or pipe it on standard input")
    llm = _make_llm(
        ctx,
        identifier,
        {"system_message": system, "temperature": temperature, "max_tokens": max_tokens},
    )
    try:
        if as_json:
            response = llm.send_user_message_sync(text, images=list(images) or None)
            print_json(response.to_dict())
            return
        try:
            response = _stream_answer(llm, text, images)
        except BrokenPipeError:  # e.g. `| head -1`: the reader is gone, and so are we
            sys.stderr.close()
            return
        click.echo(_usage_line(response), err=True)
    finally:
        llm.close()


@cli.command("chat")
@click.argument("identifier")
@click.option("--system", "-s", "system", help="A system prompt.")
@click.option("--temperature", "-t", type=float, help="Sampling temperature.")
@click.option("--max-tokens", "-m", type=int, help="Most tokens to generate per answer.")
@click.pass_context
def chat_command(
    ctx: click.Context,
    identifier: str,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
) -> None:
    """Chat with IDENTIFIER: answers stream as they come, the conversation is kept.

    \b
    /system TEXT   set the system prompt (/system alone shows it)
    /reset         forget the conversation (the system prompt stays)
    /usage         tokens and cost so far
    /exit          leave (or Ctrl-D); Ctrl-C stops the current answer
    """
    from llmfactory.messages import Usage

    llm = _make_llm(
        ctx,
        identifier,
        {"system_message": system, "temperature": temperature, "max_tokens": max_tokens},
    )
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):  # line editing and history for input()
            import readline  # noqa: F401
        click.echo(f"chatting with {llm.identifier}; /help for commands", err=True)
    total = Usage()
    answers = 0
    try:
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                click.echo("", err=True)
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if _command(llm, line, total, answers):
                    break
                continue
            try:
                response = _stream_answer(llm, line)
            except KeyboardInterrupt:
                click.echo("\n(answer cancelled; the conversation is unchanged)", err=True)
                continue
            except LLMFactoryError as exc:
                click.echo(f"\nerror: {exc}", err=True)
                continue
            answers += 1
            if response.usage is not None:
                total = total + response.usage
    finally:
        llm.close()


def _command(llm: BaseLLM, line: str, total: Usage, answers: int) -> bool:
    """Run a /command; True means leave."""
    command, _, argument = line.partition(" ")
    argument = argument.strip()
    if command in ("/exit", "/quit"):
        return True
    if command == "/reset":
        llm.clear_history()
        click.echo("(conversation cleared)", err=True)
    elif command == "/system":
        if argument:
            llm.configure_system_prompt(argument)
            click.echo("(system prompt set)", err=True)
        else:
            click.echo(llm.system_prompt or "(no system prompt)")
    elif command == "/usage":
        cost = f", ${total.cost_usd:.6f}" if total.cost_usd else ""
        approx = " (estimated)" if total.estimated else ""
        click.echo(
            f"{answers} answers, {total.prompt_tokens} prompt + {total.completion_tokens} "
            f"completion = {total.total_tokens} tokens{cost}{approx}; "
            f"{len(llm.messages)} messages in the conversation"
        )
    elif command == "/help":
        click.echo(_CHAT_HELP, err=True)
    else:
        click.echo(f"unknown command {command}; /help lists them", err=True)
    return False
