"""Discovery commands: ``discover``, ``hosts list|add|remove``, ``announce``."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from llmfactory.cli import cli, get_factory, make_console, print_json

if TYPE_CHECKING:
    from llmfactory.registry.models import HostRecord
    from llmfactory.runtimes.discovery import DiscoveryReport, HostReport

__all__: list[str] = []

_MARKS = {
    "probing": "[cyan]…[/cyan]",
    "ok": "[green]✓[/green]",
    "unreachable": "[red]✗[/red]",
    "error": "[yellow]![/yellow]",
}


def _status_line(report: HostReport) -> str:
    mark = _MARKS.get(report.status, "?")
    head = f"{mark} {report.key:<40} "
    if report.status == "probing":
        return head + "[dim]probing…[/dim]"
    took = f"[dim]{report.elapsed:.2f} s[/dim]"
    if report.status == "ok":
        version = f"v{report.version}" if report.version else (report.api or "")
        warn = f" [yellow]({report.warnings[0]})[/yellow]" if report.warnings else ""
        return head + f"ok {version} {report.model_count} model(s) {took}{warn}"
    return head + f"{report.status}: {_without_key(report.error, report.key)} {took}"


def _without_key(error: str | None, key: str) -> str:
    """An error message without the ``runtime@host:port:`` it starts with (shown already)."""
    text = error or ""
    return text[len(key) + 2 :] if text.startswith(f"{key}: ") else text


class _LiveStatus:
    """One status line per host on stderr, updated as probes start and end."""

    def __init__(self) -> None:
        from rich.live import Live
        from rich.text import Text

        self._console = make_console(stderr=True)
        self._lines: dict[str, HostReport] = {}
        self._lock = threading.Lock()
        self._text = Text
        self._live = Live(Text(""), console=self._console, refresh_per_second=10,
                          transient=False, auto_refresh=self._console.is_terminal)

    def _render(self) -> Any:
        return self._text.from_markup(
            "\n".join(_status_line(r) for r in self._lines.values()) or "no hosts to probe"
        )

    def update(self, report: HostReport) -> None:
        with self._lock:
            self._lines[report.key] = report
            if self._console.is_terminal:
                self._live.update(self._render())

    def __enter__(self) -> _LiveStatus:
        if self._console.is_terminal:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._console.is_terminal:
            self._live.update(self._render())
            self._live.stop()
        else:
            for report in self._lines.values():
                self._console.print(_status_line(report), highlight=False)


def _print_summary(report: DiscoveryReport) -> None:
    console = make_console()
    console.print(
        f"hosts: [green]{len(report.ok)} ok[/green], "
        f"[red]{len(report.unreachable)} unreachable[/red], "
        f"[yellow]{len(report.errors)} error(s)[/yellow]; models: {len(report.added)} added, "
        f"{len(report.updated)} updated, {len(report.unavailable)} now unavailable "
        f"[dim]({report.elapsed:.2f} s)[/dim]",
        highlight=False,
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


@cli.command("discover")
@click.option("--mdns/--no-mdns", default=None,
              help="Also browse the LAN with DNS-SD (default: the config's discovery.mdns).")
@click.option("--host", "hosts", multiple=True, metavar="[RUNTIME=]URL",
              help="Probe only this host (repeatable), e.g. ollama=http://gpu-box:11434; "
              "without RUNTIME= it is guessed from the port (11434 ollama, 1234 lmstudio, "
              "else openai_compatible).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No live status lines on stderr.")
def discover_command(
    mdns: bool | None, hosts: tuple[str, ...], as_json: bool, quiet: bool
) -> None:
    """Probe runtimes now (configured hosts, or --host ones) and update the registry."""
    from llmfactory.factory import LLMFactory
    from llmfactory.runtimes.discovery import factory_refresh, initialize_without_discovery

    factory = LLMFactory.instance()
    initialize_without_discovery(factory)  # this command probes; no start-up probe first
    if quiet or (as_json and not sys.stderr.isatty()):
        report = factory_refresh(factory, list(hosts) or None, mdns)
    else:
        with _LiveStatus() as live:
            report = factory_refresh(factory, list(hosts) or None, mdns, on_status=live.update)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_summary(report)


def _ago(when: Any) -> str:
    if when is None:
        return "never"
    from datetime import datetime, timezone

    seconds = (datetime.now(timezone.utc) - when).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{when:%Y-%m-%d %H:%M}"


def _host_dict(record: HostRecord) -> dict[str, Any]:
    return {
        "runtime": record.runtime,
        "address": record.address,
        "url": record.base_url,
        "source": record.source,
        "status": record.status,
        "version": record.version,
        "model_count": record.model_count,
        "last_seen": record.last_seen.isoformat() if record.last_seen else None,
        "last_checked": record.last_checked.isoformat() if record.last_checked else None,
        "last_error": record.last_error,
    }


_CHECK_HELP = ("Probe every host first (one cheap request each, at most --timeout seconds) "
               "and record its status.")


@cli.group("hosts", invoke_without_command=True)
@click.option("--check", is_flag=True, help=_CHECK_HELP + " Implies `list`.")
@click.option("--json", "as_json", is_flag=True, help="With no command: print JSON.")
@click.pass_context
def hosts_group(ctx: click.Context, check: bool, as_json: bool) -> None:
    """Hosts where runtimes listen: list them (the default), check, add or remove one."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(hosts_list, as_json=as_json, check=check)


@hosts_group.command("list")
@click.option("--check", is_flag=True, help=_CHECK_HELP)
@click.option("--timeout", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="Seconds each check may take.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def hosts_list(ctx: click.Context, as_json: bool, check: bool = False,
               timeout: float = 2.0) -> None:
    """Each known host with its status, version, model count, last seen and last error."""
    factory = get_factory(ctx)
    checked: dict[str, Any] = {}
    if check:
        checked = {r.key: r for r in factory.check_hosts(timeout=timeout)}
    records = factory.hosts()
    if as_json:
        rows = []
        for r in records:
            row = _host_dict(r)
            if r.key in checked:
                report = checked[r.key]
                row["check"] = {"status": report.status, "error": report.error,
                                "elapsed": round(report.elapsed, 4)}
            rows.append(row)
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("runtime", "url", "source", "status", "version", "models", "last seen"):
        table.add_column(column)
    if checked:
        table.add_column("check", justify="right")
    table.add_column("last error", overflow="fold")
    styles = {"ok": "green", "unreachable": "red", "error": "yellow"}
    for r in records:
        style = styles.get(r.status)
        table.add_row(
            r.runtime,
            r.base_url,
            r.source,
            f"[{style}]{r.status}[/{style}]" if style else r.status,
            r.version or "-",
            str(r.model_count),
            _ago(r.last_seen),
            *([f"{checked[r.key].elapsed * 1000:.0f} ms" if r.key in checked else "-"]
              if checked else []),
            _without_key(r.last_error, r.key),
        )
    console = make_console()
    console.print(table)
    console.print(f"[dim]{len(records)} host(s)[/dim]")


@hosts_group.command("add")
@click.argument("runtime")
@click.argument("url")
@click.option("--no-probe", is_flag=True, help="Only remember the host; probe it later.")
@click.option("--json", "as_json", is_flag=True, help="Print the host record as JSON.")
@click.pass_context
def hosts_add(ctx: click.Context, runtime: str, url: str, no_probe: bool, as_json: bool) -> None:
    """Remember a host, e.g. `llmfactory hosts add ollama http://gpu-box:11434`."""
    record = get_factory(ctx).add_host(runtime, url, probe=not no_probe)
    if as_json:
        print_json(_host_dict(record))
        return
    detail = ""
    if record.status == "ok":
        detail = f": ok, {record.model_count} model(s)"
    elif record.status != "unknown":
        detail = f": {record.status} ({record.last_error})"
    click.echo(f"added {record.runtime} host {record.base_url}{detail}")


@hosts_group.command("remove")
@click.argument("runtime")
@click.argument("url")
@click.pass_context
def hosts_remove(ctx: click.Context, runtime: str, url: str) -> None:
    """Forget a host (its models stay in the registry, as they were)."""
    factory = get_factory(ctx)
    if not factory.remove_host(runtime, url):
        raise ValueError(
            f"no stored {runtime} host {url!r}; `llmfactory hosts list` shows the known ones "
            "(hosts from the config file or the environment are removed there)"
        )
    click.echo(f"removed {runtime} host {url}")
    from llmfactory.runtimes.hosts import host_from_url

    key = host_from_url(runtime, url).key
    still = next((r for r in factory.hosts() if r.key == key), None)
    if still is not None:
        click.echo(
            f"note: {key} is still named by the {still.source} settings (config file or "
            "environment) and will be probed again; remove it there",
            err=True,
        )


@cli.command("announce")
@click.option("--runtime", "-r", required=True, help="The runtime to announce (ollama, …).")
@click.option("--port", "-p", type=click.IntRange(1, 65535), required=True,
              help="The port it listens on, on this machine.")
@click.option("--version", "version", help="The runtime's version (asked from it if not given).")
@click.option("--path", default="", help="An API path prefix, if it is served under one.")
@click.option("--name", help="The service instance name (default: RUNTIME on HOSTNAME port PORT).")
@click.option("--interface", "interfaces", multiple=True, metavar="IP",
              help="Announce on this interface address only (repeatable).")
@click.option("--duration", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds (default: until Ctrl-C).")
def announce_command(
    runtime: str,
    port: int,
    version: str | None,
    path: str,
    name: str | None,
    interfaces: tuple[str, ...],
    duration: float | None,
) -> None:
    """Publish a runtime on this machine over DNS-SD so other machines find it."""
    from llmfactory.runtimes.base import get_runtime
    from llmfactory.runtimes.mdns import Announcement

    runtime = runtime.strip().lower()
    get_runtime(runtime)
    if version is None:
        version = _local_version(runtime, port, path)
    announcement = Announcement(runtime, port, version=version, path=path, name=name,
                                interfaces=list(interfaces) or None)
    with announcement:
        click.echo(
            f"announcing {announcement.name} (port {port}, TXT "
            + ", ".join(f"{k}={v}" for k, v in announcement.properties.items())
            + ")" + ("" if duration is not None else "; Ctrl-C to stop"),
        )
        sys.stdout.flush()
        try:
            if duration is not None:
                time.sleep(duration)
            else:  # pragma: no cover - interactive
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:  # pragma: no cover - interactive
            pass
    click.echo("announcement withdrawn")


def _local_version(runtime: str, port: int, path: str) -> str | None:
    """Ask the runtime on this machine for its version (None when it does not answer)."""
    from llmfactory.identifiers import HostAddress
    from llmfactory.runtimes.base import Host
    from llmfactory.runtimes.discovery import ProbeOptions, probe_hosts, run_sync

    host = Host(runtime=runtime, address=HostAddress("127.0.0.1", port), path=path.rstrip("/"),
                source="explicit")

    async def probe() -> Any:
        return await probe_hosts([host], ProbeOptions(deadline=2.0))

    outcomes, _ = run_sync(probe)
    report = outcomes[0].report if outcomes else None
    if report is None or report.status != "ok":
        reason = report.error if report is not None else "no answer"
        click.echo(f"warning: {reason}; announcing anyway", err=True)
        return None
    return str(report.version) if report.version else None
