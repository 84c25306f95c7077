"""A warm `python -m rgbacli` for the tests (tests/conftest.py `run_cli`).

Each CLI test used to pay ~9 s importing torch, diffusers' models and our pipelines before parsing a
single option. This server imports them once, never runs a tensor operation (so no OpenMP pool exists
to be inherited), and forks one child per request. The child is a real, separate process: its own
stdin/stdout/stderr files, environment, working directory, signal dispositions and exit status, the
same `rgbacli.cli.main` that `python -m rgbacli` runs.

Protocol on the server's stdin/stdout, one JSON request per line → "PID\\n" as soon as the child runs,
then "EXIT_CODE\\n" when it ends (negative: killed by that signal, as subprocess reports it).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback


def preload() -> None:
    """What a CLI call imports on its way to the work (the expensive part of start-up)."""
    import rgbacli.backends  # noqa: F401  diffusers' Wan and CogVideoX models, torch
    import rgbacli.cli  # noqa: F401
    import rgbacli.engine  # noqa: F401
    import rgbacli.pipelines.t2v  # noqa: F401


def _rebind(fd: int, path: str, flags: int) -> None:
    new = os.open(path, flags, 0o644)
    os.dup2(new, fd)
    os.close(new)


def run_child(req: dict) -> None:
    """In the forked child: become `python -m rgbacli ARGS` with the request's files, env and cwd."""
    code = 1
    try:
        _rebind(0, req["stdin"], os.O_RDONLY)
        _rebind(1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        _rebind(2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        for sig in (signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        import rgbacli

        sys.argv = [os.path.join(os.path.dirname(rgbacli.__file__), "__main__.py"), *req["args"]]
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        os._exit(1)
    try:
        from rgbacli.cli import main

        main(list(req["args"]))
        code = 0
    except SystemExit as e:  # what the interpreter does with it at exit
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001  an uncaught exception: traceback, exit 1
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code & 0xFF)


def serve() -> None:
    preload()
    requests, replies = sys.stdin.buffer, sys.stdout
    replies.write("ready\n")
    replies.flush()
    for line in iter(requests.readline, b""):
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(req)
        replies.write(f"{pid}\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(f"{os.waitstatus_to_exitcode(status)}\n")
        replies.flush()


if __name__ == "__main__":
    serve()
