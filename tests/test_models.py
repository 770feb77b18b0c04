"""Every registered model: built by name, counted, and trained by the one train step.

The step assembles the tables' gradients from gathered rows (deepfm_lib.engine.step); for
each model it must do exactly what MindSpore's autodiff and Adam do on the whole loss.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from deepfm_lib import models
from deepfm_lib.config import ModelConfig
from deepfm_lib.engine.device import use_device
from deepfm_lib.engine.step import TrainStep
from deepfm_lib.models.base import ModelWithLoss, count_parameters

VOCAB, FIELDS, EMB, LAYERS = 60, 5, 3, (8, 4)
STUDY = ["deepfm", "dnn", "fm", "lr", "wide_deep"]


@pytest.fixture(autouse=True)
def _cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    use_device("CPU")


def config(name: str) -> ModelConfig:
    return ModelConfig(
        name=name, vocab_size=VOCAB, field_size=FIELDS, emb_dim=EMB, deep_layers=LAYERS, l2=1e-2
    )


def build(name: str):
    ms.set_seed(11)
    return models.build(config(name))


def test_the_registry_holds_the_study_models_and_names_them_on_a_typo():
    assert models.available() == STUDY
    with pytest.raises(ValueError, match="no model named 'deep_fm'; registered: deepfm, dnn"):
        models.model_class("deep_fm")


def _mlp(inputs: int) -> int:
    dims = [inputs, *LAYERS, 1]
    return sum(i * o + o for i, o in zip(dims, dims[1:], strict=False))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lr", VOCAB),  # one weight per id, no bias: the zoo's linear term
        ("fm", VOCAB + VOCAB * EMB),
        ("dnn", VOCAB * EMB + _mlp(FIELDS * EMB)),
        ("wide_deep", VOCAB + VOCAB * EMB + _mlp(FIELDS * EMB)),
        ("deepfm", VOCAB + VOCAB * EMB + _mlp(FIELDS * EMB)),
    ],
)
def test_parameter_counts_follow_the_formula(name, expected):
    assert count_parameters(build(name)) == expected


def _batches(n: int, rows: int = 16):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        ids = rng.integers(0, 20, (rows, FIELDS)).astype(np.int32)
        weights = rng.random((rows, FIELDS)).astype(np.float32)
        labels = (rng.random((rows, 1)) < 0.4).astype(np.float32)
        out.append((ids, weights, labels, np.ones((rows, 1), np.float32)))
    return out


def _run(step, data) -> list[float]:
    step.set_train(True)
    return [float(step(*(Tensor(a) for a in batch)).asnumpy()) for batch in data]


@pytest.mark.parametrize("name", STUDY)
def test_the_train_step_equals_autodiff_and_adam_for_every_model(name):
    data = _batches(3)
    ref_net = build(name)
    opt = nn.Adam(ref_net.trainable_params(), learning_rate=1e-2, eps=1e-8)
    ref_losses = _run(nn.TrainOneStepCell(ModelWithLoss(ref_net), opt), data)

    net = build(name)
    p0 = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    fused = net.fusable  # the fused kernels where the model allows them
    losses = _run(TrainStep(net, 1e-2, 1e-8, fused=fused), data)

    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    want = {p.name: p.asnumpy() for p in ref_net.trainable_params()}
    for p in net.trainable_params():
        np.testing.assert_allclose(p.asnumpy(), want[p.name], rtol=1e-5, atol=1e-7, err_msg=p.name)
    moved = [p.name for p in net.trainable_params() if not np.array_equal(p.asnumpy(), p0[p.name])]
    assert sorted(moved) == sorted(p0), "every parameter was updated"


def test_lr_is_the_first_order_term_alone():
    """LR's logit is sum_f w[id_f] x_f, nothing else (the teacher's linear part's family)."""
    net = build("lr")
    ids, weights, _, _ = _batches(1)[0]
    w = net.tables()[0].asnumpy()[:, 0]
    want = (w[ids] * weights).sum(axis=1, keepdims=True)
    got = net(Tensor(ids), Tensor(weights)).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_fused_kernels_are_refused_for_a_model_without_both_tables():
    with pytest.raises(ValueError, match="fused CPU kernels need a model with both tables"):
        TrainStep(build("dnn"), 1e-2, 1e-8, fused=True)


NOTEBOOK_SESSION = """
import numpy as np, mindspore as ms
from deepfm_lib import models
from deepfm_lib.config import ModelConfig
from deepfm_lib.engine.inference import load_model, predict

assert ms.get_context("mode") == ms.PYNATIVE_MODE  # MindSpore's default, as in JupyterLab
cfg = ModelConfig(name="{name}", vocab_size=60, field_size=5, emb_dim=3, deep_layers=(8, 4))
ms.save_checkpoint(models.build(cfg), "model.ckpt")
net = load_model(cfg, "model.ckpt")
rng = np.random.default_rng(0)
ids = rng.integers(0, 60, (7, 5)).astype(np.int32)
weights = rng.random((7, 5)).astype(np.float32)
logits = net(ms.Tensor(ids), ms.Tensor(weights)).asnumpy()[:, 0]
_, probs = predict(net, [(ids, weights, np.zeros((7, 1), np.float32))])
np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-6)
print("OK", logits.round(6).tolist())
"""


@pytest.mark.parametrize("name", ["deepfm", "lr"])
def test_a_loaded_model_runs_from_a_fresh_interpreter_in_the_default_mode(name, tmp_path):
    # Issue 18.3: `net(ids, weights)` in MindSpore's default PyNative mode used to fail in
    # pyboost_reshape under NumPy 2; building a network now selects graph mode itself.
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", NOTEBOOK_SESSION.format(name=name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("OK"), done.stdout
