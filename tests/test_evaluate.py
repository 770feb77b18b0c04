"""Global metrics and inference from a saved checkpoint."""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from deepfm_lib.config import ModelConfig
from deepfm_lib.engine.device import use_device
from deepfm_lib.engine.inference import (
    binary_metrics,
    export_mindir,
    load_mindir,
    load_model,
    predict,
)
from deepfm_lib.models.deepfm import DeepFM

CFG = ModelConfig(vocab_size=120, field_size=39, emb_dim=4, deep_layers=(16, 8))


@pytest.fixture(autouse=True)
def _cpu_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    use_device("CPU")


def brute_force_auc(labels, probs):
    pos = probs[labels == 1]
    neg = probs[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(80) < 0.35).astype(float)
    probs = rng.integers(0, 6, size=80) / 5.0  # few distinct values: many ties
    got = binary_metrics(labels, probs)["auc"]
    assert got == pytest.approx(brute_force_auc(labels, probs), abs=1e-9)


def test_other_metrics_match_their_definitions():
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0], dtype=float)
    probs = np.array([0.9, 0.2, 0.6, 0.4, 0.1, 0.8, 0.5, 0.3])
    m = binary_metrics(labels, probs)
    want_ll = -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    assert m["logloss"] == pytest.approx(want_ll, abs=1e-12)
    assert m["accuracy"] == pytest.approx(6 / 8)  # 0.6 and 0.4 are wrong; 0.5 is negative
    assert m["mean_prediction"] == pytest.approx(probs.mean())
    assert m["observed_ctr"] == pytest.approx(3 / 8)
    assert m["rows"] == 8


def test_single_class_gives_nan_auc_but_finite_logloss():
    m = binary_metrics(np.zeros(5), np.full(5, 0.1))
    assert math.isnan(m["auc"])
    assert m["logloss"] == pytest.approx(-np.log(0.9))


def test_mismatched_or_non_finite_inputs_are_rejected():
    with pytest.raises(ValueError, match="length"):
        binary_metrics(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(np.array([0.0, 1.0]), np.array([0.2, np.nan]))


def _batches(n_rows, batch, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, CFG.vocab_size, size=(n_rows, 39)).astype(np.int32)
    w = rng.random((n_rows, 39)).astype(np.float32)
    y = (rng.random((n_rows, 1)) < 0.5).astype(np.float32)
    return [
        (ids[i : i + batch], w[i : i + batch], y[i : i + batch]) for i in range(0, n_rows, batch)
    ]


def test_saved_model_predicts_like_the_network_including_a_partial_batch(tmp_path):
    ms.set_seed(11)
    net = DeepFM(CFG)
    path = tmp_path / "model.ckpt"
    ms.save_checkpoint(net, str(path))
    batches = _batches(70, 32)  # 32, 32, 6
    loaded = load_model(CFG, path)
    labels, probs = predict(loaded, batches)
    ids = np.concatenate([b[0] for b in batches])
    w = np.concatenate([b[1] for b in batches])
    net.set_train(False)
    direct = ops.sigmoid(net(Tensor(ids), Tensor(w))).asnumpy()[:, 0]
    assert labels.shape == probs.shape == (70,)
    np.testing.assert_array_equal(labels, np.concatenate([b[2] for b in batches])[:, 0])
    np.testing.assert_allclose(probs, direct, atol=1e-6)


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    ms.save_checkpoint(DeepFM(CFG), str(path))
    with pytest.raises(ValueError, match="embedding_table"):
        load_model(ModelConfig(vocab_size=121, field_size=39, emb_dim=4, deep_layers=(16, 8)), path)
    with pytest.raises(FileNotFoundError):
        load_model(CFG, tmp_path / "missing.ckpt")


def test_mindir_export_predicts_like_the_checkpoint_at_any_batch_size(tmp_path):
    ms.set_seed(5)
    path = tmp_path / "model.ckpt"
    ms.save_checkpoint(DeepFM(CFG), str(path))
    net = load_model(CFG, path)
    mindir = export_mindir(net, tmp_path / "export" / "model.mindir")
    assert mindir.is_file() and not list(mindir.parent.glob(".*"))
    graph = load_mindir(mindir)
    for rows in (7, 32):
        ids, w, _ = _batches(rows, rows, seed=rows)[0]
        from_ckpt = predict(net, [(ids, w, np.zeros((rows, 1), np.float32))])[1]
        from_mindir = graph(Tensor(ids), Tensor(w)).asnumpy()[:, 0]
        np.testing.assert_allclose(from_mindir, from_ckpt, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=".mindir"):
        export_mindir(net, tmp_path / "model.onnx")
