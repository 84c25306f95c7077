"""The `rgba` command: a thin Typer app that parses, calls the engine and reports.

Each command is a plain function in rgbacli/commands/<name>.py, registered here by hand, so this
file is the list of what `rgba` can do. RgbaError and usage errors become one line on stderr
with a non-zero exit code (1 for RgbaError, 2 for usage); anything else is a bug (exit 3).
"""

from __future__ import annotations

import os
import sys
import threading

import click
import typer

from rgbacli.commands import codec, compare, composite, generate, inspect, interpolate, models, story, train
from rgbacli.errors import RgbaError
from rgbacli.fsutil import install_signal_cleanup, stopped_by_signal

app = typer.Typer(
    name="rgba",
    help="Transparent (RGBA) video: generate, encode/decode through the RGBA VAE, composite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root() -> None:
    """Transparent (RGBA) video: generate, encode/decode through the RGBA VAE, composite."""


app.command("generate")(generate.generate)
app.command("story")(story.story)
app.command("interpolate")(interpolate.interpolate)
app.command("encode")(codec.encode)
app.command("decode")(codec.decode)
app.command("composite")(composite.composite)
app.command("inspect")(inspect.inspect)
app.command("compare")(compare.compare)
app.command("models")(models.models)
app.add_typer(train.train_app, name="train")


def _quiet_libraries() -> None:
    """Library log chatter (diffusers' dtype notes, transformers hints) is not for our users.
    Set through the environment so that commands which never import diffusers stay fast."""
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# Typer ≥ 0.2x runs on its own copy of click (typer._click) with its own exception classes; older
# Typer raises click's. Catch both, through Typer's public names where it has them.
_USAGE_ERRORS = (click.exceptions.ClickException, getattr(typer, "TyperException", click.exceptions.ClickException))
_ABORTS = (click.exceptions.Abort, typer.Abort)
_EXITS = (click.exceptions.Exit, typer.Exit)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `rgba` script: one clear line on stderr for every expected failure."""
    _quiet_libraries()
    debug = bool(os.environ.get("RGBA_DEBUG"))
    if threading.current_thread() is threading.main_thread():
        install_signal_cleanup()  # SIGTERM/SIGINT: remove temporary outputs, exit 143/130
    try:
        rv = app(args=argv, prog_name="rgba", standalone_mode=False)
    except SystemExit as e:
        if stopped_by_signal():
            sys.stderr.write(f"rgba: stopped by a signal; temporary files removed (exit {e.code})\n")
        raise
    except _USAGE_ERRORS as e:  # unknown option or command, missing or bad argument
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "rgba"
        sys.stderr.write(f"{where}: error: {e.format_message()}\n")
        sys.exit(getattr(e, "exit_code", 2))
    except _ABORTS:
        sys.stderr.write("rgba: aborted\n")
        sys.exit(130)
    except _EXITS as e:
        sys.exit(e.exit_code)
    except RgbaError as e:
        if debug:
            raise
        sys.stderr.write(f"rgba: error: {e}\n")
        sys.exit(e.exit_code)
    except OSError as e:  # the environment (disk full, read-only, permissions), not a bug
        if debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        sys.stderr.write(f"rgba: error: {where}{e.strerror or e}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("rgba: interrupted\n")
        sys.exit(130)
    except Exception as e:  # a bug: still one line, the traceback only on request
        if debug:
            raise
        sys.stderr.write(f"rgba: internal error: {type(e).__name__}: {e} (set RGBA_DEBUG=1 for a traceback)\n")
        sys.exit(3)
    sys.exit(rv if isinstance(rv, int) else 0)
