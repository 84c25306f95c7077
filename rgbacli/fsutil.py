"""Safe outputs: refuse to clobber without --force, write to a temp name, rename when complete.

Every temporary file or folder made here is recorded while it lives, so that
`install_signal_cleanup()` can remove them when the process is told to stop (SIGTERM, Ctrl-C).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

from rgbacli.errors import OutputExistsError, RgbaError

# Live temporary paths (str → True for a folder). Plain dict operations are atomic under the GIL;
# no lock, so a signal handler running on top of any code can read it without deadlocking.
_LIVE: dict[str, bool] = {}
# Signal state: how deep we are in sections that must not be cut (a rename), and a signal that
# arrived inside one; `exiting` once a signal was acted on (a second one exits at once).
_SIG = {"depth": 0, "pending": 0, "exiting": False}


def check_output(path: str | os.PathLike, force: bool, error: type[RgbaError] = RgbaError) -> Path:
    """Validate an output path before any work starts (exists without --force, missing dir).

    `error` is the class raised for a missing or unwritable folder (media passes MediaError).
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists (pass --force to overwrite)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise error(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise error(f"output directory {parent} is not writable")
    return path


def reason(e: BaseException) -> str:
    """The human part of an OS error ("No space left on device"), without errno or temp names."""
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def make_temp(parent: Path, prefix: str, suffix: str = "", directory: bool = False,
              error: type[RgbaError] = RgbaError, what: str | os.PathLike = "") -> Path:
    """Create and register a temporary file or folder in `parent` (removed by discard_temp)."""
    try:
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as e:
        raise error(f"{what or parent}: cannot create a temporary file in {parent} ({reason(e)})") from None
    _LIVE[str(tmp)] = directory
    return tmp


def discard_temp(tmp: Path) -> None:
    """Remove a registered temporary file or folder (if still there) and forget it."""
    _LIVE.pop(str(tmp), None)
    _remove(str(tmp))


def forget_temp(tmp: Path) -> None:
    """Stop tracking a temporary path that has been renamed into place."""
    _LIVE.pop(str(tmp), None)


def _remove(name: str) -> None:
    try:
        if os.path.isdir(name) and not os.path.islink(name):
            shutil.rmtree(name, ignore_errors=True)
        else:
            os.unlink(name)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # best effort: cleanup must never hide the error that caused it


def remove_live_temps() -> None:
    """Remove every temporary file or folder this process still has open (e.g. on a signal)."""
    for name in list(_LIVE):
        _LIVE.pop(name, None)
        _remove(name)


@contextmanager
def signals_deferred():
    """A section a stop signal must not cut in half (renaming finished outputs into place):
    a SIGTERM/SIGINT arriving inside it is acted on when it ends."""
    _SIG["depth"] += 1
    try:
        yield
    finally:
        _SIG["depth"] -= 1
        if _SIG["depth"] == 0 and _SIG["pending"]:
            signum, _SIG["pending"] = _SIG["pending"], 0
            _on_signal(signum, None)


def _on_signal(signum: int, frame) -> None:
    """Remove temporary outputs, then exit 128 + signal (143 SIGTERM, 130 SIGINT).

    The exit is a SystemExit, so `finally` blocks and context managers still run; a second
    signal while they do exits at once.
    """
    code = 128 + signum
    if _SIG["exiting"]:
        remove_live_temps()
        os._exit(code)
    if _SIG["depth"]:
        _SIG["pending"] = signum
        return
    _SIG["exiting"] = True
    remove_live_temps()
    raise SystemExit(code)


def stopped_by_signal() -> bool:
    """Whether this process is exiting because of a stop signal (see install_signal_cleanup)."""
    return bool(_SIG["exiting"])


def install_signal_cleanup(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Make SIGTERM/SIGINT remove every live temporary output and exit 143/130 (main thread only)."""
    for s in signals:
        signal.signal(s, _on_signal)
    _SIG["exiting"] = False


@contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False, directory: bool = False,
                  error: type[RgbaError] = RgbaError):
    """Yield a temporary sibling path (same suffix) and move it onto `path` only on success.

    With `directory=True` the temporary path is a fresh directory that replaces `path` whole.
    On any exception (or a stop signal, see install_signal_cleanup) the temporary file/directory
    is removed and `path` is left untouched. OS errors creating or renaming it raise `error`.
    """
    path = check_output(path, force, error)
    parent = path.parent if str(path.parent) else Path(".")
    if directory:
        tmp = make_temp(parent, f".{path.name}.tmp-", directory=True, error=error, what=path)
    else:
        tmp = make_temp(parent, f".{path.stem}.tmp-", path.suffix, error=error, what=path)
    try:
        yield tmp
        with signals_deferred():
            try:
                _default_mode(tmp)
                if directory:
                    if path.exists():
                        if path.is_dir():
                            shutil.rmtree(path)
                        else:
                            path.unlink()
                    os.replace(tmp, path)
                else:
                    if path.is_dir():
                        raise RgbaError(f"{path} is a directory; cannot overwrite it with a file")
                    os.replace(tmp, path)
            except OSError as e:
                raise error(f"{path}: cannot move the finished output into place ({reason(e)})") from None
            forget_temp(tmp)
    except BaseException:
        discard_temp(tmp)
        raise


def _default_mode(path: Path) -> None:
    """Give a finished temporary file or folder the mode a plain `open()` or `mkdir` would have:
    mkstemp and mkdtemp make them private (0600 / 0700), and the rename would keep that."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


__all__ = [
    "atomic_output", "check_output", "discard_temp", "forget_temp", "install_signal_cleanup", "make_temp",
    "reason", "remove_live_temps", "signals_deferred", "stopped_by_signal",
]
