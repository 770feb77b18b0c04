"""Atomic writes: an output is either complete or absent, never half-written.

A stage killed midway (Ctrl-C, out of memory, a failing cell) must not leave a file that
the next stage, or DVC, would take for a finished result.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil


def _staging_prefix(final: Path, kind: str) -> str:
    """`.<name>.<kind>-<pid>-`: whose staging area it is, so a later run can tell an orphan."""
    return f".{final.name}.{kind}-{os.getpid()}-"


def remove_orphans(final: Path) -> None:
    """Delete what a killed writer of `final` left: its staging files and folders.

    A process killed with SIGKILL runs no cleanup, and a partial shard set of the full
    Criteo file is gigabytes. Only entries whose owner process is gone are touched.
    """
    for kind in ("tmp", "old"):
        head = f".{final.name}.{kind}-"
        for left in final.parent.glob(glob.escape(head) + "*"):
            pid = left.name[len(head) :].split("-", 1)[0]
            if not pid.isdigit() or psutil.pid_exists(int(pid)):
                continue
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left, ignore_errors=True)
            else:
                left.unlink(missing_ok=True)


@contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `final` only if the block succeeds.

    ``suffix`` ends the temporary name, for writers that insist on one (MindSpore's
    checkpoints ``.ckpt``, MindIR ``.mindir``, NumPy's ``.npz``).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(final)
    stem = _staging_prefix(final, "tmp")
    tmp = final.with_name(stem + "part" + suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        # Writers may stage under a name of their own beside ours (MindSpore's checkpoint
        # writer swaps the suffix for ".tmp"): a failed write, on a full disk above all,
        # must leave none of them behind.
        for left in tmp.parent.glob(glob.escape(stem) + "*"):
            if left.is_dir():
                shutil.rmtree(left, ignore_errors=True)
            elif left.exists():
                left.unlink()


def make_temp_dir(out_dir: Path) -> Path:
    """A fresh, ordinary (0755) folder beside `out_dir`, on the same file system."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir, "tmp"), dir=out_dir.parent))
    tmp.chmod(0o755)
    return tmp


def replace_dir(tmp: Path, out_dir: Path, marker: str) -> None:
    """Rename `tmp` onto `out_dir`, replacing it only if it holds `marker` or is empty.

    An earlier output of ours carries the marker; anything else could be a user's folder
    named by a typo, and is refused rather than wiped.
    """
    if out_dir.exists():
        if not (out_dir / marker).exists() and any(out_dir.iterdir()):
            raise FileExistsError(
                f"{out_dir}: exists, is not empty and has no {marker}; refusing to replace it"
            )
        trash = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir, "old"), dir=out_dir.parent))
        os.rename(out_dir, trash / "old")
        os.rename(tmp, out_dir)
        shutil.rmtree(trash)
    else:
        os.rename(tmp, out_dir)


def write_json(path: str | Path, data: Any) -> None:
    """Write stable JSON (sorted keys, fixed indent) so identical results hash identically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
