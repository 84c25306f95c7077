"""Safe outputs: refuse to clobber without --force, write to a temp name, rename when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from rgbacli.errors import OutputExistsError, RgbaError


def check_output(path: str | os.PathLike, force: bool) -> Path:
    """Validate an output path before any work starts (exists without --force, missing dir)."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists (pass --force to overwrite)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise RgbaError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise RgbaError(f"output directory {parent} is not writable")
    return path


@contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False, directory: bool = False):
    """Yield a temporary sibling path (same suffix) and move it onto `path` only on success.

    With `directory=True` the temporary path is a fresh directory that replaces `path` whole.
    On any exception the temporary file/directory is removed and `path` is left untouched.
    """
    path = check_output(path, force)
    parent = path.parent if str(path.parent) else Path(".")
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
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
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def _default_mode(path: Path) -> None:
    """Give a finished temporary file or folder the mode a plain `open()` or `mkdir` would have:
    mkstemp and mkdtemp make them private (0600 / 0700), and the rename would keep that."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
