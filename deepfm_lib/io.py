"""Atomic writes: an output is either complete or absent, never half-written.

A stage killed midway (Ctrl-C, out of memory, a failing cell) must not leave a file that
the next stage, or DVC, would take for a finished result.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `final` only if the block succeeds.

    ``suffix`` ends the temporary name, for writers that insist on one (MindSpore's
    checkpoints ``.ckpt``, MindIR ``.mindir``, NumPy's ``.npz``).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def make_temp_dir(out_dir: Path) -> Path:
    """A fresh, ordinary (0755) folder beside `out_dir`, on the same file system."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
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
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
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
