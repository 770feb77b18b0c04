"""The speed benchmark's same-machine baseline trains the same maths as the study's step.

benchmarks/train.py compares the train stage with the model zoo's training graph rebuilt op
for op (benchmarks/zoo_reference.py). That comparison only means something if the rebuilt
graph computes the same loss and makes the same update as deepfm_lib's step.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mindspore import Tensor

from deepfm_lib.config import ModelConfig
from deepfm_lib.engine.device import use_device
from deepfm_lib.engine.step import TrainStep
from deepfm_lib.models.base import ModelWithLoss
from deepfm_lib.models.deepfm import DeepFM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from zoo_reference import zoo_train_step  # noqa: E402

CFG = ModelConfig(vocab_size=60, field_size=5, emb_dim=4, deep_layers=(8, 3), l2=1e-2)


@pytest.fixture(autouse=True)
def _cpu_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    use_device("CPU")


def _copy_weights(net: DeepFM, zoo) -> None:
    """The study's weights into the rebuilt zoo network (its own Parameter layout)."""
    z = zoo.network.net
    z.fm_w.set_data(Tensor(net.linear.fm_w.asnumpy()))
    z.embedding_table.set_data(Tensor(net.embedding.embedding_table.asnumpy()))
    for k in range(len(z.weights)):
        layer = getattr(net.mlp, f"dense_layer_{k + 1}")
        z.weights[k].set_data(Tensor(layer.weight.asnumpy()))
        z.biases[k].set_data(Tensor(layer.bias.asnumpy()))


def _batches(n: int = 3, b: int = 16):
    rng = np.random.default_rng(7)
    for _ in range(n):
        ids = rng.integers(0, CFG.vocab_size, (b, CFG.field_size)).astype(np.int32)
        x = rng.random((b, CFG.field_size)).astype(np.float32)
        y = (rng.random((b, 1)) < 0.3).astype(np.float32)
        yield ids, x, y


def test_zoo_reference_has_the_study_parameter_count():
    zoo = zoo_train_step(CFG, lr=1e-3, eps=5e-8, loss_scale=1.0)
    ours = DeepFM(CFG)
    assert sum(p.size for p in zoo.network.trainable_params()) == sum(
        p.size for p in ours.trainable_params()
    )


def test_zoo_reference_trains_like_the_study_step():
    """Same weights in, same losses and same weights out after three Adam steps."""
    net = DeepFM(CFG)
    ours = TrainStep(net, lr=1e-2, eps=5e-8, loss_scale=1024.0)
    zoo = zoo_train_step(CFG, lr=1e-2, eps=5e-8, loss_scale=1024.0)
    _copy_weights(net, zoo)
    for p in (ours, zoo):
        p.set_train(True)
    reference = ModelWithLoss(net)
    for ids, x, y in _batches():
        before = float(reference(Tensor(ids), Tensor(x), Tensor(y)).asnumpy())
        got_zoo = float(zoo(Tensor(ids), Tensor(x), Tensor(y)).asnumpy())
        mask = Tensor(np.ones((len(ids), 1), np.float32))
        got_ours = float(ours(Tensor(ids), Tensor(x), Tensor(y), mask).asnumpy())
        np.testing.assert_allclose(got_zoo, before, rtol=1e-5)
        np.testing.assert_allclose(got_ours, before, rtol=1e-5)
    z = zoo.network.net
    np.testing.assert_allclose(
        z.embedding_table.asnumpy(), net.embedding.embedding_table.asnumpy(), atol=1e-5
    )
    np.testing.assert_allclose(z.fm_w.asnumpy(), net.linear.fm_w.asnumpy(), atol=1e-5)
    np.testing.assert_allclose(
        z.weights[0].asnumpy(), net.mlp.dense_layer_1.weight.asnumpy(), atol=1e-5
    )


def test_preprocess_benchmark_runs_end_to_end(tmp_path):
    # Figures only, nothing timed here: the script must still run against the library
    # (its floor writes records in the study's own layout).
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "preprocess.py"
    out = subprocess.run(
        [sys.executable, str(script), "--rows", "20000", "40000", "--rounds", "1"]
        + ["--cache", str(tmp_path), "--baseline-rows", "500"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("rows/s end to end") == 2
    assert "phases parse" in out.stdout and "floor on 20,000 rows" in out.stdout
    assert "estimate for the full Criteo file" in out.stdout
