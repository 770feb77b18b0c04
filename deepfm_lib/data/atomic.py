"""Publishing a finished output folder in one rename.

Why: a crash or a bad input half-way must never leave a folder that looks complete (DVC
would cache it, and MindSpore's FileWriter refuses to overwrite files), so outputs are built
in a temporary folder beside the target and renamed into place at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def make_temp_dir(out_dir: Path) -> Path:
    """A fresh, ordinary (0755) folder beside out_dir, on the same file system."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)
    return tmp


def replace_dir(tmp: Path, out_dir: Path, marker: str) -> None:
    """Rename tmp onto out_dir. An existing out_dir is replaced only if it holds `marker`
    (i.e. it is an earlier output of ours) or is empty, so a mistyped path cannot wipe a
    user's folder."""
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
