"""Ends an msrun job when the process that started it dies, however it dies.

A launcher killed with SIGKILL (a notebook kernel, papermill, ``dvc repro``) runs no
cleanup, and msrun starts its scheduler and workers in sessions of their own, so nothing
would stop them: they keep the cores and the port. The kernel still closes a dead
process's files. The reaper is a small process in a session of its own. It blocks on
the read end of a pipe, and only the launcher holds the write end. End of file means the
launcher has finished or died. The reaper then ends every process whose environment
carries the job's token. msrun hands its environment to the scheduler and the workers,
so they all carry it. On a normal exit the launcher has already stopped them all, and
the reaper finds nothing to do.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

__all__ = ["JOB_TOKEN", "reaped", "kill_job", "end_processes"]

JOB_TOKEN = "DEEPFM_MSRUN_JOB"  # environment variable naming the job a process belongs to


@contextlib.contextmanager
def reaped(env: dict[str, str]) -> Iterator[str]:
    """Mark ``env`` with a fresh job token; whatever is started with it dies with us.

    Yields the token. On leaving, the pipe is closed and the reaper ends whatever is left.
    """
    token = uuid.uuid4().hex
    read_end, write_end = os.pipe()  # not inherited: msrun must not hold the write end
    reaper_env = {k: v for k, v in env.items() if k != JOB_TOKEN}
    try:
        reaper = subprocess.Popen(
            [sys.executable, "-m", __name__, token],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            env=reaper_env,
            start_new_session=True,  # a Ctrl-C or a kill of our process group spares it
        )
    finally:
        os.close(read_end)
    env[JOB_TOKEN] = token
    try:
        yield token
    finally:
        os.close(write_end)
        with contextlib.suppress(subprocess.TimeoutExpired):
            reaper.wait(timeout=15)


def end_processes(procs: list, grace_s: float = 3.0) -> None:
    """SIGTERM each psutil process in order, then SIGKILL those alive after ``grace_s``."""
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def kill_job(token: str, grace_s: float = 3.0) -> None:
    """End every process whose environment carries the job's ``token``."""
    import psutil

    victims = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and proc.environ().get(JOB_TOKEN) == token:
                victims.append(proc)
    end_processes(victims, grace_s)


def main(argv: list[str]) -> int:
    (token,) = argv
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):  # nothing is ever written: this waits for EOF
            pass
    kill_job(token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
