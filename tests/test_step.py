"""The train step's two update rules: the zoo's dense Adam, and `lazy_adam` on touched rows."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from deepfm_lib.config import ModelConfig, ParamsError, parse
from deepfm_lib.engine.device import use_device
from deepfm_lib.engine.step import TrainStep
from deepfm_lib.models.base import ModelWithLoss, l2_penalty
from deepfm_lib.models.deepfm import DeepFM

CFG = ModelConfig(vocab_size=60, field_size=5, emb_dim=3, deep_layers=(8,), l2=1e-2)
LR, EPS = 1e-2, 1e-8


@pytest.fixture(autouse=True)
def _cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    use_device("CPU")


def batches(n: int, rows: int = 16, seed: int = 0):
    """Batches whose ids repeat within a row and across rows (the case lazy Adam gets wrong)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(0, 20, (rows, CFG.field_size)).astype(np.int32)  # ids 20..59 unused
        weights = rng.random((rows, CFG.field_size)).astype(np.float32)
        labels = (rng.random((rows, 1)) < 0.4).astype(np.float32)
        out.append((ids, weights, labels, np.ones((rows, 1), np.float32)))
    return out


def fresh_net() -> DeepFM:
    ms.set_seed(7)
    return DeepFM(CFG)


def run(step, data) -> list[float]:
    step.set_train(True)
    return [float(step(*(Tensor(a) for a in batch)).asnumpy()) for batch in data]


def weights_of(net: DeepFM) -> dict[str, np.ndarray]:
    return {p.name: p.asnumpy().copy() for p in net.trainable_params()}


@pytest.mark.parametrize("fused", [False, True], ids=["mindspore_kernels", "fused_kernels"])
@pytest.mark.parametrize("loss_scale", [1.0, 1024.0])
def test_zoo_rule_equals_autodiff_through_the_whole_loss(loss_scale, fused):
    """Building the tables' gradients by hand (with MindSpore's ops, or the fused C kernels)
    is the same maths as nn.TrainOneStepCell's, padded rows included."""
    data = batches(4)
    ids, weights, labels, mask = data[-1]
    mask[-3:] = 0.0  # a padded last batch: its padding must not count
    ref_net = fresh_net()
    opt = nn.Adam(ref_net.trainable_params(), learning_rate=LR, eps=EPS, loss_scale=loss_scale)
    ref = nn.TrainOneStepCell(ModelWithLoss(ref_net), opt, sens=loss_scale)
    ref_losses = run(ref, data)

    net = fresh_net()
    losses = run(TrainStep(net, LR, EPS, loss_scale=loss_scale, fused=fused), data)

    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    want = weights_of(ref_net)
    for name, got in weights_of(net).items():
        np.testing.assert_allclose(got, want[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("lazy_adam", [False, True], ids=["zoo_rule", "lazy_adam"])
@pytest.mark.parametrize("fused", [False, True], ids=["mindspore_kernels", "fused_kernels"])
def test_every_path_reports_the_objective_defined_once(fused, lazy_adam):
    """Each way the step computes the loss gives the objective of models.base (data_loss +
    l2_penalty, as ModelWithLoss composes them) on the weights before the step, to float32
    precision. The L2 term is made most of the loss (l2 1, init std 0.3), so that an error
    in it shows; lazy_adam's objective is the same with L2 on the rows the batch touched."""
    heavy = CFG.model_copy(update={"l2": 1.0, "init_std": 0.3})
    ids, weights, labels, mask = batches(1)[0]
    mask[-3:] = 0.0  # padded rows count in neither term
    ms.set_seed(7)
    net = DeepFM(heavy)
    tensors = [Tensor(a) for a in (ids, weights, labels, mask)]
    rows = np.unique(ids) if lazy_adam else np.arange(heavy.vocab_size)
    squares = sum(float((p.asnumpy()[rows].astype(np.float64) ** 2).sum()) for p in net.tables())
    penalty = float(l2_penalty(heavy.l2, squares))
    if lazy_adam:
        expected = float(ModelWithLoss(net, l2=0.0)(*tensors).asnumpy()) + penalty
    else:
        expected = float(ModelWithLoss(net)(*tensors).asnumpy())
    assert penalty > 5 * (expected - penalty)  # the L2 term is most of the loss, as meant

    step = TrainStep(net, LR, EPS, lazy_adam=lazy_adam, fused=fused)
    loss = run(step, [(ids, weights, labels, mask)])[0]
    assert loss == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("fused", [False, True], ids=["mindspore_kernels", "fused_kernels"])
def test_lazy_adam_rule_is_lazy_adam_on_each_distinct_row_once(fused):
    """One step of `lazy_adam` against NumPy: summed duplicate gradients, L2 on touched rows."""
    (ids, weights, labels, mask) = batches(1)[0]
    net = fresh_net()
    before = weights_of(net)
    # The gradient of the data loss with respect to every table row, by autodiff on a
    # network without L2 (so it is the data part only).
    probe_net = fresh_net()
    probe = ModelWithLoss(probe_net, l2=0.0)
    grad_fn = ms.value_and_grad(
        probe, None, [probe_net.linear.fm_w, probe_net.embedding.embedding_table]
    )
    data_loss, (g_w, g_v) = grad_fn(*(Tensor(a) for a in (ids, weights, labels, mask)))

    loss = run(
        TrainStep(net, LR, EPS, lazy_adam=True, fused=fused), [(ids, weights, labels, mask)]
    )[0]

    touched = np.unique(ids)
    l2 = CFG.l2
    reg = 0.5 * l2 * sum((before[t][touched] ** 2).sum() for t in ("fm_w", "embedding_table"))
    assert loss == pytest.approx(float(data_loss.asnumpy()) + reg, rel=1e-5)
    lr_t = LR * np.sqrt(1 - 0.999) / (1 - 0.9)
    for name, g in (("fm_w", g_w.asnumpy()), ("embedding_table", g_v.asnumpy())):
        old, new = before[name], net.parameters_dict()[name].asnumpy()
        grad = g[touched] + l2 * old[touched]
        m, v = 0.1 * grad, 0.001 * grad**2
        expect = old[touched] - lr_t * m / (np.sqrt(v) + EPS)
        np.testing.assert_allclose(new[touched], expect, rtol=1e-4, atol=1e-6, err_msg=name)
        untouched = np.setdiff1d(np.arange(CFG.vocab_size), touched)
        np.testing.assert_array_equal(new[untouched], old[untouched], err_msg=name)


def test_lazy_adam_rule_trains_deterministically_and_alike_with_either_kernels():
    data = batches(6, seed=3)
    a = run(TrainStep(fresh_net(), LR, EPS, lazy_adam=True), data)
    b = run(TrainStep(fresh_net(), LR, EPS, lazy_adam=True), data)
    assert a == b
    assert a[-1] < a[0]
    fused = run(TrainStep(fresh_net(), LR, EPS, lazy_adam=True, fused=True), data)
    assert fused == run(TrainStep(fresh_net(), LR, EPS, lazy_adam=True, fused=True), data)
    np.testing.assert_allclose(fused, a, rtol=1e-5)


def test_lazy_adam_is_refused_for_a_data_parallel_target(base_params):
    raw = dict(base_params)
    raw["train"] = {**raw.get("train", {}), "lazy_adam": True}
    raw["targets"] = {"CPU": {"device": "CPU", "workers": 2}}
    with pytest.raises(ParamsError, match="train.lazy_adam is single-process only"):
        parse(raw)
    # The engine refuses it with the same rule when called without params.yaml.
    with pytest.raises(ValueError, match="train.lazy_adam is single-process only"):
        TrainStep(fresh_net(), LR, EPS, lazy_adam=True, ranks=2)
    raw["train"] = {**raw["train"], "lazy_adam": False, "batch_size": 1001}
    with pytest.raises(ParamsError, match="batch_size 1001 .* does not split evenly"):
        parse(raw)
