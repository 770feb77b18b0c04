"""Training loop: compiled Adam step, per-step loss, per-epoch global eval, resumable checkpoints.

Design choices, and why:
- The step is ``deepfm_lib.engine.step.TrainStep`` in graph mode: ``nn.TrainOneStepCell``'s
  compiled step (measured 38-49% faster than ``value_and_grad`` + ``ms.jit`` on this CPU)
  with the tables' gradients built sparsely. Graph-kernel fusion stays off: with MindSpore
  2.10 on CPU the second network compiled in a process fails ("Output index 0, but the node
  output kernel object types size just 0"). ``benchmarks/train.py`` measures each lever.
- Every batch is padded to ``batch_size`` with zero-weight rows and a row mask, so graph mode
  compiles one shape. Padding was about 2x faster per step than dynamic shapes (``set_inputs``
  with a None batch dimension) on this CPU; the masked loss equals the unpadded one.
- Loss scale: the zoo's fixed scheme (gradients of loss * S, Adam divides by S); 1.0 is off.
- Checkpoints hold weights, Adam state and the position (epoch, batch within the epoch,
  global step), so an interrupted run continues where it stopped and, with ``dropout == 0``
  (the zoo's setting), ends with the same weights as an uninterrupted run. MindSpore's CPU
  dropout kernels keep their random state internally, so with ``dropout > 0`` a resumed run
  is statistically but not bitwise the same.
- The growing logs live in ``checkpoints/`` (they are part of the resumable state); the
  published ``loss.csv``/``eval.csv``/``model.ckpt``/``train_summary.json`` are written
  to a temporary name and renamed into place.
- Data parallel (``collective`` from ``deepfm_lib.engine.parallel``): the same loop runs on every
  rank. ``cfg.batch_size`` is the global batch, each rank steps with its share; the step
  returns the global loss and row count; rank 0 alone reads and writes files, broadcasts
  its start (fresh or resumed) to the others, and scores the gathered predictions.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import mindspore as ms
import numpy as np
from mindspore import Tensor
from tqdm import tqdm

from deepfm_lib.config import ModelConfig, TrainConfig, batch_split_problem
from deepfm_lib.engine.inference import Batch, binary_metrics, pad_batch, predict
from deepfm_lib.engine.kernels import use_fused
from deepfm_lib.engine.step import TrainStep
from deepfm_lib.io import atomic_path
from deepfm_lib.models import build
from deepfm_lib.models.base import count_parameters

if TYPE_CHECKING:
    from deepfm_lib.engine.parallel import Collective


def _json_safe(value):
    """NaN/inf are not JSON; DVC and browsers reject them, so they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


__all__ = [
    "TrainResult",
    "NonFiniteLossError",
    "ResumeMismatchError",
    "train",
    "list_checkpoints",
]

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
BEST_CKPT = "best.ckpt"  # weights of the epoch with the best evaluation AUC so far
_CKPT_RE = re.compile(r"^step_(\d{9})\.ckpt$")
_RUN_JSON = "run.json"
_LOSS_LOG = "loss_log.csv"
_EVAL_LOG = "eval_log.csv"
# Seconds each epoch's evaluation took, kept apart from eval.csv so that the published
# metrics stay identical run to run; the zoo-format AUC log reads them (zoo_logs).
EVAL_TIMES = "eval_times.csv"
_EVAL_TIMES_HEADER = ["epoch", "eval_s"]
# Settings that change the trajectory; epochs and checkpoint cadence do not, so a finished
# run can be extended with more epochs and still resume.
# Not part of what the weights depend on (seeds: the study's list; a run has its seed).
# Patience only decides where the same trajectory stops, so it is not fingerprinted either.
_NOT_FINGERPRINTED = {"epochs", "patience", "checkpoint_every_steps", "keep_checkpoints", "seeds"}


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; training stopped without saving the bad weights."""


class ResumeMismatchError(RuntimeError):
    """out_dir holds checkpoints of a run with different settings."""


@dataclass
class TrainResult:
    """What a run produced; throughput figures cover the steps run by this call only."""

    out_dir: Path
    epochs: int
    steps: int
    steps_this_run: int
    samples_this_run: int
    samples_per_s: float | None
    ms_per_step: float | None
    compile_s: float | None
    wall_s: float
    parameters: int
    resumed_from_step: int | None
    stopped_early: bool = False
    best_epoch: int | None = None
    eval_history: list[dict] = field(default_factory=list)
    final_metrics: dict | None = None
    loss_csv: Path | None = None
    eval_csv: Path | None = None
    model_path: Path | None = None
    summary_path: Path | None = None
    checkpoint_dir: Path | None = None


@dataclass
class _Position:
    epoch: int  # 0-based epoch in progress == epochs completed when batch_in_epoch == 0
    batch_in_epoch: int  # batches of `epoch` already trained
    global_step: int  # steps trained in total


def _fingerprint(model_cfg: ModelConfig, cfg: TrainConfig, data_id: str, ranks: int = 1) -> dict:
    train = {k: v for k, v in cfg.model_dump().items() if k not in _NOT_FINGERPRINTED}
    if ranks > 1:  # sharding decides which rows meet in a batch; absent for one process
        train["ranks"] = ranks
    model = model_cfg.model_dump()
    model["deep_layers"] = list(model["deep_layers"])
    return {"model": model, "train": train, "data": {"id": data_id}}


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete training checkpoints in ``ckpt_dir``, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if _CKPT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(_CKPT_RE.match(p.name).group(1)))


def _read_position(params: dict) -> _Position:
    def as_int(key: str) -> int:
        value = params[key]
        return int(value.asnumpy()) if hasattr(value, "asnumpy") else int(value)

    return _Position(as_int("pos_epoch"), as_int("pos_batch_in_epoch"), as_int("pos_global_step"))


def _truncate_csv(path: Path, header: list[str], keep: Callable[[dict], bool]) -> int:
    """Rewrite ``path`` keeping rows that ``keep`` accepts; returns how many were kept."""
    rows = []
    if path.exists():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if keep(r)]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


class _Run:
    """State of one train() call; split out so train() reads as the loop it is."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        out_dir: Path,
        data_id: str,
        collective: Collective | None = None,
    ):
        self.model_cfg = model_cfg
        self.cfg = cfg
        self.collective = collective
        self.ranks = collective.size if collective else 1
        self.is_main = collective is None or collective.is_main  # the one that writes files
        problem = batch_split_problem(cfg.batch_size, self.ranks)
        if problem:
            raise ValueError(problem)
        self.local_batch = cfg.batch_size // self.ranks
        self.data_id = data_id
        self.out_dir = out_dir
        self.ckpt_dir = out_dir / CKPT_DIR
        self.loss_log = self.ckpt_dir / _LOSS_LOG
        self.eval_log = self.ckpt_dir / _EVAL_LOG
        self.eval_times = self.ckpt_dir / EVAL_TIMES
        ms.set_context(mode=ms.GRAPH_MODE)
        ms.set_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.net = build(model_cfg)
        self.fused = use_fused(cfg.kernels, ms.get_context("device_target"), self.net)
        log.info("embedding kernels: %s", "fused CPU kernels" if self.fused else "MindSpore's")
        self.step_cell = TrainStep(
            self.net,
            lr=cfg.lr,
            eps=cfg.eps,
            loss_scale=cfg.loss_scale,
            lazy_adam=cfg.lazy_adam,
            ranks=self.ranks,
            fused=self.fused,
        )
        self.step_cell.set_train(True)
        # What runs a step; checkpoints hold step_cell's parameters either way.
        self.step_fn = collective.step_cell(self.step_cell) if collective else self.step_cell
        self.last_good: Path | None = None

    def step(self, batch: Batch) -> tuple[float, int]:
        """Train on one batch; the loss and the real rows over all ranks."""
        (ids, weights, labels), mask, n = pad_batch(batch, self.local_batch)
        out = self.step_fn(Tensor(ids), Tensor(weights), Tensor(labels), Tensor(mask)).asnumpy()
        if self.collective is None:
            return float(out), n
        return float(out[0]), int(round(float(out[1])))

    def start(self, restart_on_mismatch: bool) -> _Position | None:
        """Rank 0 resumes or starts clean; every other rank then receives its state."""
        resumed = self.prepare(restart_on_mismatch) if self.is_main else None
        if self.collective is None:
            return resumed
        position = None if resumed is None else astuple(resumed)
        shared = self.collective.broadcast_start(self.step_cell, position)
        return None if shared is None else _Position(*shared)

    # -- checkpoints -----------------------------------------------------------------------
    def prepare(self, restart_on_mismatch: bool = False) -> _Position | None:
        """Resume from the last checkpoint, or start clean; returns the resume position."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        fingerprint = _fingerprint(self.model_cfg, self.cfg, self.data_id, self.ranks)
        run_json = self.ckpt_dir / _RUN_JSON
        ckpts = list_checkpoints(self.ckpt_dir)
        if ckpts:
            if not run_json.exists():
                raise ResumeMismatchError(
                    f"{self.ckpt_dir} holds checkpoints but no {_RUN_JSON}; cannot tell which "
                    "settings made them. Delete that folder or choose another out_dir."
                )
            previous = json.loads(run_json.read_text())
            if previous != fingerprint and restart_on_mismatch:
                log.info(
                    "%s holds checkpoints of other settings or data; starting over", self.ckpt_dir
                )
                for old in ckpts:
                    old.unlink()
                (self.out_dir / BEST_CKPT).unlink(missing_ok=True)
                ckpts = []
            elif previous != fingerprint:
                diffs = [
                    f"{part}.{k}: {previous.get(part, {}).get(k)!r} -> {v!r}"
                    for part in ("model", "train", "data")
                    for k, v in fingerprint[part].items()
                    if previous.get(part, {}).get(k) != v
                ]
                raise ResumeMismatchError(
                    f"{self.ckpt_dir} holds checkpoints of a run with different settings "
                    f"({'; '.join(diffs) or 'format changed'}). Delete that folder to start "
                    "over, or choose another out_dir."
                )
        if ckpts:
            return self._resume(ckpts[-1])
        for stale in (self.loss_log, self.eval_log, self.eval_times, self.out_dir / BEST_CKPT):
            stale.unlink(missing_ok=True)
        _atomic_write_text(run_json, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
        _truncate_csv(self.loss_log, ["step", "epoch", "loss"], lambda r: False)
        _truncate_csv(self.eval_log, ["epoch", "auc", "logloss"], lambda r: False)
        _truncate_csv(self.eval_times, _EVAL_TIMES_HEADER, lambda r: False)
        return None

    def _resume(self, path: Path) -> _Position:
        params = ms.load_checkpoint(str(path))
        pos = _read_position(params)
        state = {
            p.name: params[p.name] for p in self.step_cell.get_parameters() if p.name in params
        }
        missing = [p.name for p in self.step_cell.get_parameters() if p.name not in params]
        if missing:
            raise ResumeMismatchError(
                f"{path} lacks {missing[:5]}; it is not a training "
                "checkpoint of this model. Delete it to start over."
            )
        ms.load_param_into_net(self.step_cell, state, strict_load=True)
        kept = _truncate_csv(
            self.loss_log, ["step", "epoch", "loss"], lambda r: int(r["step"]) <= pos.global_step
        )
        if kept != pos.global_step:
            log.warning(
                "%s has %d rows for %d steps; the loss log has gaps",
                self.loss_log,
                kept,
                pos.global_step,
            )
        for log_csv, header in (
            (self.eval_log, ["epoch", "auc", "logloss"]),
            (self.eval_times, _EVAL_TIMES_HEADER),
        ):
            _truncate_csv(log_csv, header, lambda r: int(r["epoch"]) <= pos.epoch)
        if self.model_cfg.dropout > 0:
            log.warning(
                "Resuming with dropout %.3g: dropout masks restart from the seed, so "
                "this run will not be bitwise identical to an uninterrupted one",
                self.model_cfg.dropout,
            )
        self.last_good = path
        log.info(
            "Resuming from %s (epoch %d, batch %d, step %d)",
            path.name,
            pos.epoch + 1,
            pos.batch_in_epoch,
            pos.global_step,
        )
        return pos

    def save(self, pos: _Position, loss_file) -> Path:
        """Write a checkpoint atomically (logs flushed first), then drop the oldest."""
        loss_file.flush()
        os.fsync(loss_file.fileno())
        final = self.ckpt_dir / f"step_{pos.global_step:09d}.ckpt"
        append = {
            "pos_epoch": pos.epoch,
            "pos_batch_in_epoch": pos.batch_in_epoch,
            "pos_global_step": pos.global_step,
        }
        with atomic_path(final, suffix=".ckpt") as tmp:  # MindSpore keeps a .ckpt name
            ms.save_checkpoint(self.step_cell, str(tmp), append_dict=append)
        self.last_good = final
        for old in list_checkpoints(self.ckpt_dir)[: -self.cfg.keep_checkpoints]:
            old.unlink()
        return final

    # -- evaluation ------------------------------------------------------------------------
    def best_epoch(self) -> int | None:
        """The first epoch with the top evaluation AUC so far (the one best.ckpt holds)."""
        if not self.is_main or not self.eval_log.exists():
            return None
        with self.eval_log.open(newline="") as f:
            rows = [(float(r["auc"]), int(r["epoch"])) for r in csv.DictReader(f)]
        return max(rows, key=lambda r: (r[0], -r[1]))[1] if rows else None

    def should_stop(self, epochs_done: int) -> bool:
        """Early stopping: ``patience`` evaluated epochs in a row without a better AUC.

        Read from the evaluation log, so a resumed run stops where an uninterrupted one
        did; rank 0 decides and every rank of a data-parallel job follows.
        """
        best = self.best_epoch() if self.cfg.patience else None
        stop = best is not None and epochs_done - best >= self.cfg.patience
        return self.collective.agree(stop) if self.collective else stop

    def predictions(
        self, eval_batches: Callable[[], Iterable[Batch]]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Labels and probabilities over the whole split (None on ranks other than 0)."""
        labels, probs = predict(self.net, eval_batches())
        self.step_cell.set_train(True)
        if self.collective is None:
            return labels, probs
        return self.collective.gather_predictions(labels, probs)

    def evaluate(self, eval_batches: Callable[[], Iterable[Batch]], epoch: int) -> dict | None:
        start = time.perf_counter()
        gathered = self.predictions(eval_batches)
        if gathered is None:
            return None
        metrics = binary_metrics(*gathered)
        seconds = time.perf_counter() - start
        with self.eval_log.open(newline="") as f:
            earlier = [float(r["auc"]) for r in csv.DictReader(f)]
        if not earlier or metrics["auc"] > max(earlier):
            with atomic_path(self.out_dir / BEST_CKPT, suffix=".ckpt") as tmp:
                ms.save_checkpoint(self.net, str(tmp), append_dict={"epoch": epoch})
        with self.eval_log.open("a", newline="") as f:
            csv.writer(f).writerow([epoch, f"{metrics['auc']:.9g}", f"{metrics['logloss']:.9g}"])
        with self.eval_times.open("a", newline="") as f:
            csv.writer(f).writerow([epoch, f"{seconds:.3f}"])
        log.info(
            "epoch %d: eval AUC %.5f logloss %.5f over %d rows",
            epoch,
            metrics["auc"],
            metrics["logloss"],
            metrics["rows"],
        )
        return metrics


def _check_batch(batch: Batch, model_cfg: ModelConfig, step: int) -> None:
    ids = batch[0]
    if ids.ndim != 2 or ids.shape[1] != model_cfg.field_size:
        raise ValueError(
            f"Batch at step {step} has ids of shape {ids.shape}; expected "
            f"(b, {model_cfg.field_size})"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= model_cfg.vocab_size):
        raise ValueError(
            f"Batch at step {step} has ids in [{ids.min()}, {ids.max()}], outside "
            f"the vocabulary [0, {model_cfg.vocab_size})"
        )


@dataclasses.dataclass
class _Clock:
    """Step times of this call. The first step includes graph compilation, so the speed
    figures leave it out (compile_s is that step)."""

    step_times: list[float] = dataclasses.field(default_factory=list)
    samples_timed: int = 0  # samples of the steps after the first
    samples_this_run: int = 0

    def add(self, seconds: float, samples: int) -> None:
        self.step_times.append(seconds)
        if len(self.step_times) > 1:
            self.samples_timed += samples
        self.samples_this_run += samples

    def samples_per_s(self) -> float | None:
        """Over the timed steps (all of them when only one ran)."""
        timed = self.step_times[1:] if len(self.step_times) > 1 else self.step_times
        samples = self.samples_timed if len(self.step_times) > 1 else self.samples_this_run
        return samples / sum(timed) if timed else None

    def ms_per_step(self) -> float | None:
        timed = self.step_times[1:] if len(self.step_times) > 1 else self.step_times
        return 1000.0 * sum(timed) / len(timed) if timed else None


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    train_batches: Callable[[int], Iterable[Batch]],
    eval_batches: Callable[[], Iterable[Batch]] | None,
    out_dir: Path,
    *,
    progress: bool = True,
    data_id: str = "",
    restart_on_mismatch: bool = False,
    collective: Collective | None = None,
) -> TrainResult:
    """Train (or resume training) one model; see the module docstring for the files written.

    ``train_batches(epoch)`` (epoch 0-based) must yield the same batches in the same order
    every time it is called: resuming skips the batches already trained in that epoch.
    Epochs and steps in the CSV files are 1-based. ``data_id`` names the training data
    (e.g. a hash of its stats) so checkpoints of other data are never resumed; with
    ``restart_on_mismatch`` such checkpoints are discarded instead of raising, which is what
    a pipeline stage rerun for changed settings wants.

    With a ``collective`` (one rank of a data-parallel job), ``train_batches`` yields this
    rank's batches of ``cfg.batch_size / ranks`` rows, the same number on every rank, and
    ``eval_batches`` this rank's part of the split; only rank 0 writes files.
    """
    wall_start = time.perf_counter()
    out_dir = Path(out_dir)
    run = _Run(model_cfg, cfg, out_dir, data_id, collective)
    if run.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    resumed = run.start(restart_on_mismatch)
    pos = resumed or _Position(0, 0, 0)  # advanced in place as steps run
    resumed_from = resumed.global_step if resumed else None
    clock = _Clock()
    final_metrics: dict | None = None
    evaluated = False  # not final_metrics: ranks other than 0 get None from evaluate()
    bar = tqdm(desc="train", unit="step", initial=pos.global_step, disable=not progress)
    try:
        log_file = run.loss_log.open("a", newline="") if run.is_main else contextlib.nullcontext()
        with log_file as loss_file:
            while pos.epoch < cfg.epochs and not run.should_stop(pos.epoch):
                _train_epoch(run, pos, train_batches(pos.epoch), loss_file, bar, clock)
                pos.epoch += 1
                pos.batch_in_epoch = 0
                if eval_batches is not None:
                    final_metrics = run.evaluate(eval_batches, pos.epoch)
                    evaluated = True
                if run.is_main:
                    run.save(pos, loss_file)
    finally:
        bar.close()

    if not evaluated and eval_batches is not None and pos.epoch > 0:
        gathered = run.predictions(eval_batches)  # resumed a finished run
        final_metrics = binary_metrics(*gathered) if gathered is not None else None
    if collective is not None:
        collective.check_replicas(run.step_cell)
    wall_s = time.perf_counter() - wall_start
    return _publish(run, pos, final_metrics, resumed_from, clock, wall_s)


def _train_epoch(
    run: _Run,
    pos: _Position,
    batches: Iterable[Batch],
    loss_file: TextIO | None,
    bar: tqdm,
    clock: _Clock,
) -> None:
    """The rest of epoch ``pos.epoch``: the batches a resumed run already trained are
    skipped, each other one is a step, logged to loss.csv and checkpointed on schedule."""
    epoch_batches = iter(batches)
    skipped = sum(1 for _ in itertools.islice(epoch_batches, pos.batch_in_epoch))
    if skipped != pos.batch_in_epoch:
        raise RuntimeError(
            f"Epoch {pos.epoch + 1} has {skipped} batches but the checkpoint says "
            f"{pos.batch_in_epoch} were trained; train_batches is not replayable"
        )
    writer = csv.writer(loss_file) if loss_file is not None else None
    every = run.cfg.checkpoint_every_steps
    for batch in epoch_batches:
        step = pos.global_step + 1
        _check_batch(batch, run.model_cfg, step)
        t0 = time.perf_counter()
        loss, n = run.step(batch)
        clock.add(time.perf_counter() - t0, n)
        if not math.isfinite(loss):  # the global loss: every rank stops here
            if loss_file is not None:
                loss_file.flush()
            where = run.last_good or "none was written yet"
            raise NonFiniteLossError(
                f"Loss is {loss} at step {step} (epoch {pos.epoch + 1}, batch "
                f"{pos.batch_in_epoch + 1}); training stopped. The last good "
                f"checkpoint is {where}. Lower the learning rate or check that "
                "batch's inputs for NaN/inf."
            )
        pos.global_step = step
        pos.batch_in_epoch += 1
        if writer is not None:
            writer.writerow([step, pos.epoch + 1, f"{loss:.9g}"])
        bar.update(1)
        if len(clock.step_times) > 1:
            bar.set_postfix(loss=f"{loss:.4f}", samples_per_s=f"{clock.samples_per_s():.0f}")
        if every and step % every == 0 and run.is_main:
            run.save(pos, loss_file)


_SPEED = ("samples_per_s", "ms_per_step", "compile_s", "wall_s")


def _keep_measured_speed(summary: dict, previous: Path) -> None:
    """A rerun that found the run finished trains no step: keep the speed that was measured.

    The figures then describe the run that produced the weights, not a null; a summary
    says so with ``speed_from``. Without an earlier summary they stay null.
    """
    if summary["steps_this_run"] or not previous.is_file():
        return
    before = json.loads(previous.read_text())
    if before.get("steps") != summary["steps"]:
        return
    for key in _SPEED:
        summary[key] = before.get(key)
    summary["speed_from"] = "the earlier call that trained these steps"


def _write_summary(run: _Run, result: TrainResult) -> None:
    """train_summary.json: the result with paths relative to out_dir (identical across
    machines and checkouts), the speed measured when this call trained nothing, and the
    run's settings."""
    out = run.out_dir
    fields = dataclasses.asdict(result)
    summary = _json_safe(
        {
            k: (v.relative_to(out).as_posix() if isinstance(v, Path) and v != out else v)
            for k, v in fields.items()
            if k != "out_dir"
        }
    )
    _keep_measured_speed(summary, result.summary_path)
    summary["seed"] = run.cfg.seed
    summary["model"] = run.model_cfg.name
    summary["batch_size"] = run.cfg.batch_size  # the global batch
    summary["ranks"] = run.ranks
    summary["batch_size_per_rank"] = run.local_batch
    summary["mindspore"] = ms.__version__
    summary["device_target"] = ms.get_current_device().device_target
    text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False)
    _atomic_write_text(result.summary_path, text + "\n")


def _publish(
    run: _Run,
    pos: _Position,
    final_metrics: dict | None,
    resumed_from: int | None,
    clock: _Clock,
    wall_s: float,
) -> TrainResult:
    """The run's files (model.ckpt, loss.csv, eval.csv, train_summary.json; rank 0 only)
    and its TrainResult."""
    out = run.out_dir
    model_path = out / "model.ckpt"
    history: list[dict] = []
    if run.is_main:  # other ranks of a data-parallel job write nothing
        with atomic_path(model_path, suffix=".ckpt") as tmp:
            ms.save_checkpoint(run.net, str(tmp))
        for src, name in ((run.loss_log, "loss.csv"), (run.eval_log, "eval.csv")):
            _atomic_write_text(out / name, src.read_text())
        with run.eval_log.open(newline="") as f:
            history = [
                {"epoch": int(r["epoch"]), "auc": float(r["auc"]), "logloss": float(r["logloss"])}
                for r in csv.DictReader(f)
            ]

    result = TrainResult(
        out_dir=out,
        epochs=pos.epoch,
        steps=pos.global_step,
        steps_this_run=len(clock.step_times),
        samples_this_run=clock.samples_this_run,
        samples_per_s=clock.samples_per_s(),
        ms_per_step=clock.ms_per_step(),
        compile_s=clock.step_times[0] if clock.step_times else None,
        wall_s=wall_s,
        parameters=count_parameters(run.net),
        resumed_from_step=resumed_from,
        stopped_early=pos.epoch < run.cfg.epochs,
        best_epoch=run.best_epoch(),
        eval_history=history,
        final_metrics=final_metrics,
        loss_csv=out / "loss.csv",
        eval_csv=out / "eval.csv",
        model_path=model_path,
        summary_path=out / "train_summary.json",
        checkpoint_dir=run.ckpt_dir,
    )
    if not run.is_main:
        return result
    _write_summary(run, result)
    log.info(
        "trained %d steps over %d epochs; %s",
        result.steps,
        result.epochs,
        f"{result.samples_per_s:.0f} samples/s" if result.samples_per_s else "no new steps",
    )
    return result
