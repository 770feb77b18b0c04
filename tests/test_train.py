"""Training on a tiny learnable problem: learning, determinism, resume, NaN guard, device."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from conftest import file_size_limit

from deepfm_lib.config import ModelConfig
from deepfm_lib.engine.device import DeviceUnavailableError, available_targets, use_device
from deepfm_lib.engine.inference import binary_metrics, load_model, predict
from deepfm_lib.engine.trainer import (
    NonFiniteLossError,
    ResumeMismatchError,
    TrainConfig,
    list_checkpoints,
    train,
)

FIELDS = 39
VOCAB = 39 * 6  # six ids per field
MODEL = ModelConfig(vocab_size=VOCAB, field_size=FIELDS, emb_dim=4, deep_layers=(16, 8), l2=1e-5)


@pytest.fixture(autouse=True)
def _cpu_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    use_device("CPU")


def make_split(rows: int, seed: int):
    """Criteo-shaped rows whose label follows a fixed random linear rule over the ids."""
    teacher = np.random.default_rng(12345).normal(size=VOCAB)
    rng = np.random.default_rng(seed)
    ids = (np.arange(FIELDS) * 6 + rng.integers(0, 6, size=(rows, FIELDS))).astype(np.int32)
    weights = np.ones((rows, FIELDS), np.float32)
    weights[:, :13] = rng.random((rows, 13))  # 13 "dense" fields carry a value
    score = (teacher[ids] * weights).sum(1)
    labels = (score > np.median(score)).astype(np.float32)[:, None]
    return ids, weights, labels


def batches_of(split, batch_size: int):
    ids, weights, labels = split
    for start in range(0, len(ids), batch_size):
        sl = slice(start, start + batch_size)
        yield ids[sl], weights[sl], labels[sl]


TRAIN = make_split(1100, seed=1)  # 1100 / 200 -> 5 full batches and one of 100
VALID = make_split(600, seed=2)


def train_source(split=TRAIN, batch_size=200):
    return lambda epoch: batches_of(split, batch_size)


def eval_source():
    return batches_of(VALID, 256)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final_weights(out_dir):
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(out_dir / "model.ckpt")).items()}


def test_training_learns_and_writes_its_outputs(tmp_path):
    cfg = TrainConfig(batch_size=200, epochs=4, lr=2e-2, seed=7)
    res = train(MODEL, cfg, train_source(), eval_source, tmp_path / "run", progress=False)

    losses = read_csv(res.loss_csv)
    assert [int(r["step"]) for r in losses] == list(range(1, 25))
    assert {int(r["epoch"]) for r in losses} == {1, 2, 3, 4}
    first = np.mean([float(r["loss"]) for r in losses[:6]])
    last = np.mean([float(r["loss"]) for r in losses[-6:]])
    assert last < 0.8 * first

    evals = read_csv(res.eval_csv)
    assert [int(r["epoch"]) for r in evals] == [1, 2, 3, 4]
    # CPU training is bit-reproducible: these are this run's figures (measured at bef1ff2,
    # 2026-12-04). The tolerance is far above float noise and far below what a change to
    # the maths does (scaling the FM term by 1.001 moves the logloss by more).
    assert float(evals[-1]["auc"]) == pytest.approx(0.9687666666666668, abs=1e-4)
    assert res.final_metrics["logloss"] == pytest.approx(0.2811596168917097, abs=1e-5)
    assert float(losses[-1]["loss"]) == pytest.approx(0.0745774284, abs=1e-5)
    assert res.final_metrics["auc"] == pytest.approx(float(evals[-1]["auc"]), abs=1e-8)
    assert res.final_metrics["rows"] == 600

    summary = json.loads(res.summary_path.read_text())
    assert summary["steps"] == 24 and summary["epochs"] == 4
    assert summary["samples_per_s"] > 0 and summary["ms_per_step"] > 0
    assert summary["final_metrics"]["auc"] == pytest.approx(res.final_metrics["auc"])

    # What evaluation loads reproduces the final metrics.
    net = load_model(MODEL, res.model_path)
    again = binary_metrics(*predict(net, eval_source()))
    assert again["auc"] == pytest.approx(res.final_metrics["auc"], abs=1e-9)
    assert len(list_checkpoints(res.checkpoint_dir)) == 3  # keep_checkpoints


def test_same_seed_gives_identical_losses(tmp_path):
    cfg = TrainConfig(batch_size=200, epochs=1, lr=1e-2, seed=3)
    a = train(MODEL, cfg, train_source(), None, tmp_path / "a", progress=False)
    b = train(MODEL, cfg, train_source(), None, tmp_path / "b", progress=False)
    assert a.loss_csv.read_text() == b.loss_csv.read_text()
    assert len(read_csv(a.loss_csv)) == 6
    c = train(
        MODEL,
        TrainConfig(batch_size=200, epochs=1, lr=1e-2, seed=4),
        train_source(),
        None,
        tmp_path / "c",
        progress=False,
    )
    assert c.loss_csv.read_text() != a.loss_csv.read_text()


class Killed(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    cfg = TrainConfig(batch_size=200, epochs=2, lr=1e-2, seed=5, checkpoint_every_steps=4)
    a = train(MODEL, cfg, train_source(), eval_source, tmp_path / "a", progress=False)

    def dies_in_epoch_2(epoch):
        for i, batch in enumerate(batches_of(TRAIN, 200)):
            if epoch == 1 and i == 3:  # global step 10 never runs; last checkpoint is step 8
                raise Killed
            yield batch

    with pytest.raises(Killed):
        train(MODEL, cfg, dies_in_epoch_2, eval_source, tmp_path / "b", progress=False)
    b = train(MODEL, cfg, train_source(), eval_source, tmp_path / "b", progress=False)

    assert b.resumed_from_step == 8
    assert b.steps_this_run == 4
    assert b.loss_csv.read_text() == a.loss_csv.read_text()
    assert b.eval_csv.read_text() == a.eval_csv.read_text()
    wa, wb = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)

    other = TrainConfig(batch_size=200, epochs=2, lr=5e-3, seed=5)
    with pytest.raises(ResumeMismatchError, match="lr"):
        train(MODEL, other, train_source(), None, tmp_path / "b", progress=False)


def test_non_finite_loss_after_a_resume_names_the_checkpoint_it_resumed_from(tmp_path):
    cfg = TrainConfig(batch_size=200, epochs=1, lr=1e-2, seed=5, checkpoint_every_steps=2)

    def batches(fail_at: int, poison: bool):
        def source(epoch):
            for i, (ids, w, y) in enumerate(batches_of(TRAIN, 200)):
                if i == fail_at and not poison:
                    raise Killed
                if i == fail_at:
                    w = w.copy()
                    w[0, 20] = np.nan
                yield ids, w, y

        return source

    with pytest.raises(Killed):  # killed during step 3: the last checkpoint is step 2
        train(MODEL, cfg, batches(2, poison=False), None, tmp_path / "run", progress=False)
    with pytest.raises(NonFiniteLossError, match=r"step_000000002\.ckpt"):
        train(MODEL, cfg, batches(2, poison=True), None, tmp_path / "run", progress=False)


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    cfg = TrainConfig(batch_size=200, epochs=1, lr=1e-2, seed=5, checkpoint_every_steps=2)

    def poisoned(epoch):
        for i, (ids, w, y) in enumerate(batches_of(TRAIN, 200)):
            if i == 4:
                w = w.copy()
                w[0, 20] = np.inf
            yield ids, w, y

    with pytest.raises(NonFiniteLossError, match=r"step 5\b"):
        train(MODEL, cfg, poisoned, None, tmp_path / "run", progress=False)
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in ckpts] == ["step_000000002.ckpt", "step_000000004.ckpt"]
    good = ms.load_checkpoint(str(ckpts[-1]))
    assert all(np.isfinite(good[n].asnumpy()).all() for n in ("fm_w", "embedding_table"))
    assert not (tmp_path / "run" / "model.ckpt").exists()


_CONTINUE = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_train as t
t.use_device("CPU")
cfg = t.TrainConfig(batch_size=200, epochs=2, lr=1e-2, seed=5, checkpoint_every_steps=2)
t.train(t.MODEL, cfg, t.train_source(), None, Path({run!r}), progress=False)
"""


def test_a_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(batch_size=200, epochs=2, lr=1e-2, seed=5, checkpoint_every_steps=2)
    whole = train(MODEL, cfg, train_source(), None, tmp_path / "whole", progress=False)
    one = TrainConfig(batch_size=200, epochs=1, lr=1e-2, seed=5, checkpoint_every_steps=2)
    train(MODEL, one, train_source(), None, tmp_path / "run", progress=False)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    good = {p.name: p.read_bytes() for p in list_checkpoints(ckpt_dir)}
    assert list(good) == ["step_000000002.ckpt", "step_000000004.ckpt", "step_000000006.ckpt"]

    # Epoch 2 in a process whose files may not pass 4 kB: the step-8 checkpoint fails.
    code = _CONTINUE.format(tests=str(Path(__file__).parent), run=str(tmp_path / "run"))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        preexec_fn=file_size_limit(4000),
        timeout=300,
    )
    assert proc.returncode != 0 and "File too large" in proc.stderr, proc.stderr[-2000:]
    # The good checkpoints are untouched and nothing half-written is left beside them.
    assert {p.name: p.read_bytes() for p in list_checkpoints(ckpt_dir)} == good
    assert not [p.name for p in ckpt_dir.iterdir() if p.name.startswith(".")]
    # With room again, the run resumes from step 6 and ends where the whole run did.
    again = train(MODEL, cfg, train_source(), None, tmp_path / "run", progress=False)
    assert again.resumed_from_step == 6
    assert again.loss_csv.read_text() == whole.loss_csv.read_text()
    wa, wb = final_weights(tmp_path / "whole"), final_weights(tmp_path / "run")
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


def test_unavailable_device_fails_before_any_work():
    if "GPU" in available_targets():
        pytest.skip("this machine has a usable GPU")
    with pytest.raises(DeviceUnavailableError) as err:
        use_device("GPU")
    msg = str(err.value)
    assert "'GPU'" in msg and "offers only: CPU" in msg and "params.yaml" in msg
    assert ms.get_current_device().device_target == "CPU"  # nothing was switched


def test_power_of_two_loss_scale_leaves_training_unchanged(tmp_path):
    # The zoo trains with loss scale 1024; scaling by 2^10 and back is exact in float32.
    plain = TrainConfig(batch_size=200, epochs=1, lr=1e-2, seed=9)
    scaled = TrainConfig(batch_size=200, epochs=1, lr=1e-2, seed=9, loss_scale=1024.0)
    a = train(MODEL, plain, train_source(), None, tmp_path / "a", progress=False)
    b = train(MODEL, scaled, train_source(), None, tmp_path / "b", progress=False)
    la = [float(r["loss"]) for r in read_csv(a.loss_csv)]
    lb = [float(r["loss"]) for r in read_csv(b.loss_csv)]
    np.testing.assert_allclose(lb, la, rtol=1e-6)


def test_early_stopping_ends_a_run_patience_epochs_after_its_best(tmp_path):
    # 200 rows learned 40 times over at a high rate: the validation AUC peaks, then falls.
    small = make_split(200, seed=1)
    cfg = TrainConfig(batch_size=200, epochs=40, patience=2, lr=0.2, seed=7)
    stopped = train(MODEL, cfg, train_source(small), eval_source, tmp_path / "es", progress=False)
    full = train(
        MODEL,
        cfg.model_copy(update={"patience": 0}),
        train_source(small),
        eval_source,
        tmp_path / "full",
        progress=False,
    )
    aucs = [float(r["auc"]) for r in read_csv(stopped.eval_csv)]
    best = stopped.best_epoch
    assert stopped.stopped_early and not full.stopped_early
    assert best == 1 + int(np.argmax(aucs)) and len(aucs) == best + 2 < 40
    assert max(aucs[best:]) < aucs[best - 1]  # the two epochs after the best were worse
    # Stopping early cuts the same trajectory: the full run's first epochs are these.
    assert read_csv(full.eval_csv)[: len(aucs)] == read_csv(stopped.eval_csv)
    # best.ckpt holds the best epoch's weights.
    best_net = load_model(MODEL, tmp_path / "es" / "best.ckpt")
    again = binary_metrics(*predict(best_net, eval_source()))
    assert again["auc"] == pytest.approx(aucs[best - 1], abs=1e-8)
    # A rerun finds it finished: it trains nothing, and stops where it stopped.
    rerun = train(MODEL, cfg, train_source(small), eval_source, tmp_path / "es", progress=False)
    assert rerun.steps_this_run == 0 and rerun.epochs == len(aucs) and rerun.stopped_early
    summary = json.loads(rerun.summary_path.read_text())
    assert summary["best_epoch"] == best and summary["stopped_early"] is True
