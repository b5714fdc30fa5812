"""``llmfactory doctor``: check the installation; ``--repair`` rebuilds a broken registry."""

from __future__ import annotations

import click

from llmfactory.cli import cli, make_console, print_json

__all__: list[str] = []

_STYLE = {"ok": "green", "warning": "yellow", "error": "red"}


@cli.command("doctor")
@click.option("--repair", is_flag=True,
              help="Move a broken registry aside (never deleting it) and rebuild it.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_context
def doctor_command(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Check the config file, the registry, the known hosts and the API keys.

    With --repair, a broken registry is moved aside and rebuilt from the built-in
    catalogue and a discovery of the configured hosts (none with --no-discover).
    """
    from llmfactory.config import Settings
    from llmfactory.doctor import repair_store, run_checks

    repaired = None
    if repair:
        discover = bool((ctx.find_root().obj or {}).get("discover", True))
        repaired = repair_store(Settings.load(), discover=discover)
    checks = run_checks()
    failed = any(c.status == "error" for c in checks)
    if as_json:
        data: dict[str, object] = {"checks": [c.to_dict() for c in checks], "ok": not failed}
        if repaired is not None:
            data["repair"] = {"repaired": repaired.repaired, "detail": repaired.detail,
                              "moved": [str(p) for p in repaired.moved]}
        print_json(data)
    else:
        console = make_console()
        if repaired is not None:
            console.print(f"[bold]repair:[/bold] {repaired.detail}", highlight=False)
            for path in repaired.moved:
                console.print(f"  kept the old file as {path}", highlight=False)
        for check in checks:
            style = _STYLE.get(check.status, "")
            console.print(f"[{style}]{check.status:7}[/{style}] {check.name}: {check.detail}",
                          highlight=False)
            if check.fix and check.status != "ok":
                console.print(f"        fix: {check.fix}", highlight=False)
    if failed:
        raise SystemExit(1)
