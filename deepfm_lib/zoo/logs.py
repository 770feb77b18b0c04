"""The model zoo's loss and AUC log lines, written from this project's loss.csv and eval.csv.

The zoo's src/callback.py appends one line per step to its loss file and one per epoch to
its AUC file; scripts that read those files keep working on this project's runs when the
same lines are produced from the CSV files the training loop already writes (so the loop
itself is not touched). Formats, as the zoo writes them:

- loss file (LossCallBack): ``<YYYY-mm-dd HH:MM:SS> epoch: <E> step: <S>, loss is <L>``,
  with S the step number inside epoch E (1-based), not the global step;
- AUC file (EvalCallBack): ``<YYYY-mm-dd HH:MM:SS> EvalCallBack metricdict_values([<AUC>]);
  eval_time<T>s`` (the zoo prints ``dict.values()`` of its metrics; T is whole seconds).

Differences a reader must know: the lines are written when training ends, so every line
carries that time, not the time of its step. T comes from the checkpoint folder's
eval_times.csv, which the training loop keeps apart from eval.csv so the published metrics
stay identical run to run; an epoch missing there (a run from before it existed) gets -1.

Like the zoo, the files are appended to. ``sync`` keeps, in the checkpoint folder, how far
each log file has been written for that folder's run, so that a run killed before it
could write its lines and then resumed still ends with every step exactly once, and a
fresh start (new settings) appends its whole history after the old one's, as the zoo does.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from deepfm_lib.io import write_json

__all__ = ["loss_lines", "eval_lines", "append_lines", "epochs_done_by", "now", "sync"]

log = logging.getLogger(__name__)

NOT_MEASURED = -1  # eval_time written for an epoch whose evaluation time was not recorded
STATE_FILE = "zoo_logs.json"  # in the checkpoint folder: {kind: {log file: last written}}


def now() -> str:
    """The zoo's timestamp format (local time, seconds)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())


def _rows(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def loss_lines(loss_csv: str | Path, after_step: int = 0, stamp: str | None = None) -> list[str]:
    """Zoo loss lines for the steps after ``after_step`` (global, 1-based) of loss.csv."""
    rows = _rows(loss_csv)
    first_step: dict[int, int] = {}
    for r in rows:  # the whole file: a resumed epoch still counts its earlier steps
        first_step.setdefault(int(r["epoch"]), int(r["step"]))
    stamp = stamp or now()
    out = []
    for r in rows:
        step, epoch = int(r["step"]), int(r["epoch"])
        if step <= after_step:
            continue
        in_epoch = step - first_step[epoch] + 1
        out.append(f"{stamp} epoch: {epoch} step: {in_epoch}, loss is {float(r['loss'])!r}")
    return out


def epochs_done_by(loss_csv: str | Path, step: int) -> int:
    """How many epochs had ended by global step ``step`` (0 when none)."""
    last: dict[int, int] = {}
    for r in _rows(loss_csv):
        last[int(r["epoch"])] = int(r["step"])
    return max((e for e, s in last.items() if s <= step), default=0)


def eval_lines(
    eval_csv: str | Path,
    after_epoch: int = 0,
    stamp: str | None = None,
    times_csv: str | Path | None = None,
) -> list[str]:
    """Zoo AUC lines for the epochs after ``after_epoch`` of eval.csv.

    ``times_csv`` (epoch, eval_s) gives each epoch's evaluation time; an epoch it lacks
    (a run from before it was kept) gets NOT_MEASURED.
    """
    stamp = stamp or now()
    times = {}
    if times_csv is not None and Path(times_csv).is_file():
        times = {int(r["epoch"]): float(r["eval_s"]) for r in _rows(times_csv)}
    out = []
    for r in _rows(eval_csv):
        epoch = int(r["epoch"])
        if epoch <= after_epoch:
            continue
        secs = int(times[epoch]) if epoch in times else NOT_MEASURED
        out.append(
            f"{stamp} EvalCallBack metricdict_values([{float(r['auc'])!r}]); eval_time{secs}s"
        )
    return out


def append_lines(path: str | Path, lines: Iterable[str]) -> int:
    """Append lines to a zoo log (the zoo opens its logs with 'a+'); returns how many."""
    lines = list(lines)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    log.info("appended %d zoo-format lines to %s", len(lines), path)
    return len(lines)


def _read_state(model_dir: Path) -> dict[str, dict[str, int]]:
    try:
        state = json.loads((model_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(model_dir: Path, state: dict) -> None:
    write_json(model_dir / STATE_FILE, state)


def _key(model_dir: Path, log_file: Path) -> str:
    # Relative to the checkpoint folder: a work folder copied or moved as a whole keeps it.
    return os.path.relpath(log_file.resolve(), model_dir.resolve())


def _written(state: dict, kind: str, key: str, resumed_from: int | None) -> int | None:
    """How far the log file ``key`` already holds this run's trajectory (None: not at all)."""
    if resumed_from is None:  # a fresh start: nothing of this trajectory is logged yet
        return None
    return state.get(kind, {}).get(key)


def sync(
    model_dir: str | Path,
    loss_file: str | Path,
    eval_file: str | Path | None,
    resumed_from_step: int | None,
) -> tuple[list[str], list[str]]:
    """Append to the zoo logs the steps and epochs of model_dir's run they lack.

    ``resumed_from_step`` is the step the training call started from (None: from scratch).
    Returns the lines appended (loss, eval); ``eval_file`` None writes no AUC log.
    """
    model_dir, loss_file = Path(model_dir), Path(loss_file)
    loss_csv, eval_csv = model_dir / "loss.csv", model_dir / "eval.csv"
    state = _read_state(model_dir)
    stamp = now()
    done = _written(state, "loss", _key(model_dir, loss_file), resumed_from_step)
    after = 0 if done is None else min(done, resumed_from_step)
    losses = loss_lines(loss_csv, after_step=after, stamp=stamp)
    append_lines(loss_file, losses)
    with Path(loss_csv).open(newline="") as f:
        last_step = max((int(r["step"]) for r in csv.DictReader(f)), default=0)
    state.setdefault("loss", {})[_key(model_dir, loss_file)] = last_step
    evals: list[str] = []
    if eval_file is not None:
        eval_file = Path(eval_file)
        done = _written(state, "eval", _key(model_dir, eval_file), resumed_from_step)
        resumed_epochs = epochs_done_by(loss_csv, resumed_from_step or 0)
        after = 0 if done is None else min(done, resumed_epochs)
        from deepfm_lib.engine.trainer import CKPT_DIR, EVAL_TIMES

        times_csv = model_dir / CKPT_DIR / EVAL_TIMES
        evals = eval_lines(eval_csv, after_epoch=after, stamp=stamp, times_csv=times_csv)
        append_lines(eval_file, evals)
        with Path(eval_csv).open(newline="") as f:
            last_epoch = max((int(r["epoch"]) for r in csv.DictReader(f)), default=0)
        state.setdefault("eval", {})[_key(model_dir, eval_file)] = last_epoch
    _write_state(model_dir, state)
    return losses, evals
