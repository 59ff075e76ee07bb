"""``seawall demo``: the cases service against fake, failing providers, played and checked.

Registered on the main command in `seawall.cli`. The demo itself is in
`seawall.demo`, imported when the command runs so that other commands stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo_command(
    port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Port of the service on 127.0.0.1; 0 picks a free one."
        ),
    ] = 8000,
    folder: Annotated[
        Path,
        typer.Option(
            "--dir",
            help="Working folder (database, logs); emptied at start, if an earlier demo made it.",
        ),
    ] = Path("var/demo"),
    exit_after: Annotated[
        bool,
        typer.Option("--exit", help="Stop after the summary instead of running until Ctrl-C."),
    ] = False,
) -> None:
    """Start fake providers and the service, then play and check a scenario.

    Idempotent cases, a payment gateway outage and its breaker, duplicate and
    early webhooks, fan-out to two consumer groups, a poison message replayed
    from the dead letters. Ends with a summary and the console's URL and key;
    runs on SQLite in --dir whatever SEAWALL_* variables are set. Exit status
    1 when a step fails.
    """
    from seawall.demo import run_demo  # noqa: PLC0415 - keeps other commands fast

    code = run_demo(folder=folder, port=port, keep_running=not exit_after)
    if code:
        raise typer.Exit(code)
