"""The demo's output: a progress line per action, a verdict per step, a summary table.

Lines are plain text with colour added where the terminal takes it, so the
output reads the same in a pipe, a log or a CI job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Outcome", "Reporter", "StepStatus"]

StepStatus = Literal["passed", "FAILED", "not run"]

_STYLE: Final = {"passed": "green", "FAILED": "bold red", "not run": "dim"}


@dataclass(slots=True)
class Outcome:
    """How one step went: for the summary table.

    Attributes:
        title: the step's name.
        happened: what the demo did and saw, in a few words.
        figures: the numbers that prove it.
        status: ``passed``, ``FAILED`` or ``not run`` (after an earlier failure).
    """

    title: str
    happened: str
    figures: str = ""
    status: StepStatus = "not run"


class Reporter:
    """Prints the demo's progress to *console*."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def _print(self, text: Text) -> None:
        self.console.print(text, soft_wrap=True)

    def heading(self, text: str) -> None:
        """A title line with a blank line above it."""
        self.console.print()
        self._print(Text(text, style="bold"))

    def step(self, number: int, total: int, title: str) -> None:
        """The start of step *number* of *total*."""
        self.console.print()
        self._print(Text.assemble((f"[{number}/{total}] ", "bold cyan"), (title, "bold")))

    def line(self, text: str) -> None:
        """One thing the demo did or saw."""
        self._print(Text.assemble(("    - ", "dim"), text))

    def ok(self, text: str) -> None:
        """An expectation that held."""
        self._print(Text.assemble(("  ok  ", "green"), text))

    def fail(self, text: str) -> None:
        """An expectation that did not hold."""
        self._print(Text.assemble(("  FAIL ", "bold red"), text))

    def summary(self, outcomes: list[Outcome]) -> None:
        """The table of every step, and one line with the verdict."""
        table = Table(title="seawall demo: summary", title_justify="left", show_lines=True)
        table.add_column("#", justify="right")
        table.add_column("step", overflow="fold")
        table.add_column("what happened", overflow="fold", ratio=3)
        table.add_column("figures", overflow="fold", ratio=2)
        table.add_column("result", no_wrap=True)
        for number, outcome in enumerate(outcomes, 1):
            table.add_row(
                str(number),
                outcome.title,
                outcome.happened,
                outcome.figures,
                Text(outcome.status, style=_STYLE[outcome.status]),
            )
        self.console.print()
        self.console.print(table)
        passed = sum(outcome.status == "passed" for outcome in outcomes)
        if passed == len(outcomes):
            self._print(Text(f"All {passed} steps passed.", style="bold green"))
        else:
            failed = next(o.title for o in outcomes if o.status != "passed")
            self._print(
                Text(
                    f"{passed} of {len(outcomes)} steps passed; failed at: {failed}.",
                    style="bold red",
                )
            )
