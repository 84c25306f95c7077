"""Shared Rich consoles: human output and progress go to stderr so stdout stays clean for --json."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

err = Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    """One-line warning on stderr."""
    err.print(f"[yellow]rgba: warning:[/yellow] {message}", soft_wrap=True)


def info(message: str) -> None:
    """One-line status message on stderr."""
    err.print(message, soft_wrap=True)


def print_json(summary: dict) -> None:
    """Machine-readable summary on stdout (for CI and shell pipelines)."""
    sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def progress(transient: bool = True):
    """A Rich progress bar on stderr; silent when stderr is not a terminal."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=transient,
        disable=not err.is_terminal,
    )
    with bar:
        yield bar
