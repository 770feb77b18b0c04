"""DeepFM's network and loss against a NumPy re-computation of the formulas."""

from __future__ import annotations

import numpy as np
import pytest
from mindspore import Tensor

from deepfm_lib.config import ModelConfig
from deepfm_lib.engine.device import use_device
from deepfm_lib.models.base import ModelWithLoss, count_parameters
from deepfm_lib.models.deepfm import DeepFM

TINY = ModelConfig(vocab_size=50, field_size=5, emb_dim=4, deep_layers=(6, 3), l2=1e-2)


@pytest.fixture(autouse=True)
def _cpu_in_tmp(tmp_path, monkeypatch):
    # MindSpore writes rank_0/ and kernel_meta/ into the working directory.
    monkeypatch.chdir(tmp_path)
    use_device("CPU")


def _params(net: DeepFM) -> dict[str, np.ndarray]:
    return {p.name: p.asnumpy().astype(np.float64) for p in net.get_parameters()}


def _numpy_logits(p: dict[str, np.ndarray], ids: np.ndarray, x: np.ndarray, n_dense: int):
    linear = (p["fm_w"][ids, 0] * x).sum(1, keepdims=True)
    e = p["embedding_table"][ids] * x[:, :, None]
    s = e.sum(1)
    fm = 0.5 * (s**2 - (e**2).sum(1)).sum(1, keepdims=True)
    h = e.reshape(len(ids), -1)
    for i in range(1, n_dense + 1):
        h = h @ p[f"dense_layer_{i}.weight"] + p[f"dense_layer_{i}.bias"]
        if i < n_dense:
            h = np.maximum(h, 0.0)
    return linear + fm + h


def _hand_batch():
    ids = np.array([[0, 7, 13, 21, 49], [3, 7, 14, 30, 2], [0, 0, 0, 0, 0]], dtype=np.int32)
    x = np.array(
        [[0.5, 1.0, 1.0, 1.0, 1.0], [0.0, 0.25, 1.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0, 0.5]],
        dtype=np.float32,
    )
    y = np.array([[1.0], [0.0], [1.0]], dtype=np.float32)
    return ids, x, y


def test_zoo_configuration_has_the_documented_parameter_count():
    net = DeepFM(ModelConfig(vocab_size=184_965, field_size=39))
    assert count_parameters(net) == 18_867_222


def test_parameters_are_named_and_laid_out_like_the_zoo():
    shapes = {p.name: tuple(p.shape) for p in DeepFM(TINY).get_parameters()}
    assert shapes == {
        "fm_w": (50, 1),
        "embedding_table": (50, 4),
        "dense_layer_1.weight": (20, 6),
        "dense_layer_1.bias": (6,),
        "dense_layer_2.weight": (6, 3),
        "dense_layer_2.bias": (3,),
        "dense_layer_3.weight": (3, 1),
        "dense_layer_3.bias": (1,),
    }


def test_initialisation_is_normal_with_the_configured_std():
    net = DeepFM(
        ModelConfig(vocab_size=2000, field_size=5, emb_dim=8, deep_layers=(64,), init_std=0.01)
    )
    table = net.embedding.embedding_table.asnumpy()
    assert abs(table.mean()) < 1e-3
    assert table.std() == pytest.approx(0.01, rel=0.05)
    bias = net.mlp.dense_layer_1.bias.asnumpy()
    assert np.any(bias != 0.0)  # biases are drawn too, not zero


def test_forward_equals_numpy_formula():
    net = DeepFM(TINY)
    net.set_train(False)
    ids, x, _ = _hand_batch()
    got = net(Tensor(ids), Tensor(x)).asnumpy()
    want = _numpy_logits(_params(net), ids, x.astype(np.float64), n_dense=3)
    assert got.shape == (3, 1)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_forward_accepts_any_batch_size():
    net = DeepFM(TINY)
    ids, x, _ = _hand_batch()
    full = net(Tensor(ids), Tensor(x)).asnumpy()
    one = net(Tensor(ids[1:2]), Tensor(x[1:2])).asnumpy()
    np.testing.assert_allclose(one, full[1:2], atol=1e-6)


def test_loss_at_initialisation_equals_bce_plus_l2():
    net = DeepFM(TINY)
    loss_net = ModelWithLoss(net)
    ids, x, y = _hand_batch()
    got = float(loss_net(Tensor(ids), Tensor(x), Tensor(y)).asnumpy())
    p = _params(net)
    z = _numpy_logits(p, ids, x.astype(np.float64), n_dense=3)
    bce = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    l2 = 0.5 * TINY.l2 * ((p["embedding_table"] ** 2).sum() + (p["fm_w"] ** 2).sum())
    assert got == pytest.approx(bce + l2, abs=1e-6)


def test_padded_rows_do_not_change_the_loss():
    net = DeepFM(TINY)
    loss_net = ModelWithLoss(net)
    ids, x, y = _hand_batch()
    plain = float(loss_net(Tensor(ids), Tensor(x), Tensor(y)).asnumpy())
    pad = 5
    ids_p = np.concatenate([ids, np.zeros((pad, 5), np.int32)])
    x_p = np.concatenate([x, np.zeros((pad, 5), np.float32)])
    y_p = np.concatenate([y, np.zeros((pad, 1), np.float32)])
    mask = np.concatenate([np.ones((3, 1)), np.zeros((pad, 1))]).astype(np.float32)
    padded = float(loss_net(Tensor(ids_p), Tensor(x_p), Tensor(y_p), Tensor(mask)).asnumpy())
    assert padded == pytest.approx(plain, abs=1e-6)


def test_dropout_acts_only_in_training():
    cfg = ModelConfig(vocab_size=50, field_size=5, emb_dim=4, deep_layers=(64, 32), dropout=0.5)
    net = DeepFM(cfg)
    ids, x, _ = _hand_batch()
    net.set_train(False)
    inference = net(Tensor(ids), Tensor(x)).asnumpy()
    want = _numpy_logits(_params(net), ids, x.astype(np.float64), n_dense=3)
    np.testing.assert_allclose(inference, want, atol=1e-5, rtol=0)
    net.set_train(True)
    training = net(Tensor(ids), Tensor(x)).asnumpy()
    assert not np.allclose(training, inference, atol=1e-7)


@pytest.mark.parametrize(
    "bad",
    [
        {"vocab_size": 0},
        {"vocab_size": 10, "deep_layers": ()},
        {"vocab_size": 10, "dropout": 1.0},
        {"vocab_size": 10, "l2": -1.0},
    ],
)
def test_invalid_config_is_rejected(bad):
    with pytest.raises(ValueError, match="ModelConfig"):
        ModelConfig(**bad)


def test_fp16_mlp_matches_fp32_within_half_precision():
    import mindspore as ms

    ids, x, _ = _hand_batch()
    ms.set_seed(3)
    full = DeepFM(TINY)
    half = DeepFM(ModelConfig(**{**TINY.model_dump(), "precision": "fp16"}))
    ms.load_param_into_net(half, {p.name: p for p in full.get_parameters()})
    a = full(Tensor(ids), Tensor(x)).asnumpy()
    b = half(Tensor(ids), Tensor(x)).asnumpy()
    assert b.dtype == np.float32
    assert not np.array_equal(a, b), "fp16 must actually round the MLP's products"
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-3)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        ModelConfig(**{**TINY.model_dump(), "precision": "fp8"})


def test_gradients_equal_numpy_backpropagation():
    """The hand-written bias gradient (ones @ dy) and the batched field sums differentiate
    like the formula: every parameter's gradient against NumPy's backward pass."""
    import mindspore as ms

    net = DeepFM(TINY)
    loss = ModelWithLoss(net, l2=0.0)
    ids, x, labels = _hand_batch()
    grads = ms.value_and_grad(loss, None, net.trainable_params())(
        Tensor(ids), Tensor(x), Tensor(labels)
    )[1]
    p = _params(net)
    n_dense = len(TINY.deep_layers) + 1
    # NumPy forward, keeping what the backward pass needs.
    e = p["embedding_table"][ids] * x[:, :, None]
    hs = [e.reshape(len(ids), -1)]
    for i in range(1, n_dense + 1):
        z = hs[-1] @ p[f"dense_layer_{i}.weight"] + p[f"dense_layer_{i}.bias"]
        hs.append(np.maximum(z, 0) if i < n_dense else z)
    logits = _numpy_logits(p, ids, x, n_dense)
    d = (1 / (1 + np.exp(-logits)) - labels) / len(ids)  # d mean BCE / d logit
    d_logit = d
    want = {}
    for i in range(n_dense, 0, -1):
        want[f"dense_layer_{i}.weight"] = hs[i - 1].T @ d
        want[f"dense_layer_{i}.bias"] = d.sum(0)
        d = d @ p[f"dense_layer_{i}.weight"].T
        if i > 1:
            d = d * (hs[i - 1] > 0)
    # d is now d loss / d h0 (the flattened e); add the FM's d/de_f = s - e_f, then the
    # lookups: row id_f collects x_f times its field's gradient.
    d_e = d.reshape(e.shape) + d_logit[:, :, None] * (e.sum(1, keepdims=True) - e)
    want["embedding_table"] = np.zeros_like(p["embedding_table"])
    want["fm_w"] = np.zeros_like(p["fm_w"])
    np.add.at(want["embedding_table"], ids, d_e * x[:, :, None])
    np.add.at(want["fm_w"], ids, (d_logit * x)[:, :, None])
    names = [q.name for q in net.trainable_params()]
    for name, got in zip(names, grads, strict=True):
        np.testing.assert_allclose(got.asnumpy(), want[name], rtol=1e-4, atol=1e-7, err_msg=name)


def test_l2_term_is_exact_on_zoo_sized_tables():
    """The L2 term over 14.8M floats matches a float64 sum (float32 running sums drift)."""
    net = DeepFM(ModelConfig(vocab_size=184_965, field_size=39))
    loss = ModelWithLoss(net)
    v = net.embedding.embedding_table.asnumpy().astype(np.float64)
    w = net.linear.fm_w.asnumpy().astype(np.float64)
    want = 0.5 * 8e-5 * ((v**2).sum() + (w**2).sum())
    # Each table's sum of squares runs as a compiled Cell (what the loss adds inside its graph).
    got = 0.5 * loss.l2 * sum(float(loss.sum_squares(t).asnumpy()) for t in net.tables())
    assert got == pytest.approx(want, rel=1e-5)
