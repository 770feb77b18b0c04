"""The synthetic source's ceiling: the teacher's own AUC on the test rows.

Synthetic labels are drawn from a known teacher, so the best AUC any model could reach on
the test split is the teacher's; its linear part alone, then linear + FM, show how much of
that ceiling each kind of signal carries. Preprocessing knows which raw lines became test
rows, the synthetic source knows the teacher: preprocessing calls a ``TeacherScore`` with
the test rows' lines and labels (before it writes the shards, so a mismatched logits file
fails early) and records what it returns in stats.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepfm_lib.data.schema import DataFormatError

LOGITS_FILE = "teacher_logits.npy"
PARTS_FILE = "teacher_parts.npy"  # float32 (lines, 3): each line's logit by term
PART_NAMES: tuple[str, ...] = ("linear", "fm", "mlp")


class TeacherScore:
    """Scores the test rows with the teacher whose logits are in ``logits`` (one per line
    of the raw file) and, when ``teacher_parts.npy`` lies beside it, with its parts."""

    def __init__(self, logits: Path) -> None:
        self.logits = Path(logits)
        if not self.logits.is_file():
            raise FileNotFoundError(f"{self.logits}: no such file (teacher logits .npy)")
        parts = self.logits.with_name(PARTS_FILE)
        self.parts = parts if parts.is_file() else None

    def __call__(self, n_lines: int, lines: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """stats.json's oracle_auc (the whole teacher), oracle_parts (None without the parts
        file) and teacher_logits, for the rows at 1-based ``lines`` with ``labels``."""
        logits = _check_logits(self.logits, n_lines)
        parts = None if self.parts is None else _check_parts(self.parts, n_lines)
        auc = _auc(labels, np.asarray(logits[lines - 1], dtype=np.float64))
        return {
            "oracle_auc": auc,
            # The teacher's AUC on the same rows from its linear part, linear + FM, and all
            # terms ("all" == oracle_auc); None without teacher_parts.npy.
            "oracle_parts": None
            if parts is None
            else self._parts(parts, logits, lines, labels, auc),
            "teacher_logits": str(self.logits),
        }

    def _parts(
        self,
        parts: np.ndarray,
        logits: np.ndarray,
        lines: np.ndarray,
        labels: np.ndarray,
        oracle_auc: float | None,
    ) -> dict[str, float] | None:
        """The AUC with the teacher's terms added one at a time.

        "all" is the full logit, so it is oracle_auc exactly; the parts are first checked
        to add up to the logits on these rows, up to one constant (the bias) and float32
        rounding, so that a parts file from another generation is not scored silently.
        """
        if len(lines) == 0:
            return None
        idx = lines - 1
        full = np.asarray(logits[idx], dtype=np.float64)
        linear = np.asarray(parts[idx, 0], dtype=np.float64)
        linear_fm = linear + parts[idx, 1]
        total = linear_fm + parts[idx, 2]
        shift = full - total
        shift -= np.median(shift)
        scale = np.abs(linear) + np.abs(linear_fm) + np.abs(total) + np.abs(full) + 1.0
        worst = int(np.argmax(np.abs(shift) / scale))
        if abs(shift[worst]) > 1e-5 * scale[worst]:
            raise DataFormatError(
                self.parts,
                None,
                None,
                f"the parts {PART_NAMES} do not add up to the logits in {self.logits} "
                f"(up to a constant bias): off by {shift[worst]:.3g} on line {int(lines[worst])}",
            )
        if oracle_auc is None:  # one class only: no AUC
            return None
        return {
            "linear": _auc(labels, linear),
            "linear+fm": _auc(labels, linear_fm),
            "all": oracle_auc,
        }


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score  # slow import, needed only here

    if len(labels) == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def _check_logits(path: Path, n_lines: int) -> np.ndarray:
    logits = np.load(path, mmap_mode="r")
    if logits.ndim != 1 or logits.shape[0] != n_lines:
        raise DataFormatError(
            path,
            None,
            None,
            f"expected one teacher logit per line of the raw file ({n_lines}), found shape "
            f"{logits.shape}",
        )
    return logits


def _check_parts(path: Path, n_lines: int) -> np.ndarray:
    parts = np.load(path, mmap_mode="r")
    shape = (n_lines, len(PART_NAMES))
    if parts.shape != shape or not np.issubdtype(parts.dtype, np.floating):
        raise DataFormatError(
            path,
            None,
            None,
            f"expected one row of teacher logit parts {PART_NAMES} per line of the raw file, "
            f"float shape {shape}, found {parts.dtype} shape {parts.shape}",
        )
    return parts
