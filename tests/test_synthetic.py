"""The synthetic Criteo-format generator: format, determinism, shape like the real data."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from deepfm_lib.data.criteo import read_chunks
from deepfm_lib.data.synthetic import CAT_MISSING, DENSE_MISSING, PART_NAMES, PARTS_FILE, generate

ROWS = 20_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "data"
    info = generate(out, ROWS, seed=3, progress=False)
    return out, info


def test_every_field_has_criteo_format(generated):
    out, _ = generated
    dense_re = re.compile(r"-?[0-9]+")
    hash_re = re.compile(r"[0-9a-f]{8}")
    text = (out / "train.txt").read_text()
    assert text.endswith("\n") and "\r" not in text
    lines = text.split("\n")[:-1]
    assert len(lines) == ROWS
    for line in lines[:3000]:
        fields = line.split("\t")
        assert len(fields) == 40
        assert fields[0] in ("0", "1")
        assert all(v == "" or dense_re.fullmatch(v) for v in fields[1:14])
        assert all(v == "" or hash_re.fullmatch(v) for v in fields[14:])


def test_outputs_and_metadata_agree(generated):
    out, info = generated
    logits = np.load(out / "teacher_logits.npy")
    assert logits.dtype == np.float32 and logits.shape == (ROWS,)
    assert json.loads((out / "generator.json").read_text()) == info
    labels = np.concatenate([c.label for c in read_chunks(out / "train.txt")])
    assert info["rows"] == ROWS and info["positives"] == int(labels.sum())
    assert info["positive_rate"] == pytest.approx(labels.mean())
    assert sorted(p.name for p in out.iterdir()) == sorted(info["files"])
    assert [p.name for p in out.parent.iterdir()] == ["data"]  # no temp folder left


def test_teacher_parts_add_up_to_the_logits(generated):
    out, info = generated
    parts = np.load(out / "teacher_parts.npy")
    logits = np.load(out / "teacher_logits.npy")
    assert parts.dtype == np.float32 and parts.shape == (ROWS, 3)
    meta = info["teacher_parts"]
    assert meta["file"] == PARTS_FILE == "teacher_parts.npy" and PARTS_FILE in info["files"]
    assert meta["columns"] == list(PART_NAMES) == ["linear", "fm", "mlp"]
    assert meta["shape"] == [ROWS, 3] and set(meta["meaning"]) == set(PART_NAMES)
    # preprocess keeps its own copy of the names (it does not import this module)
    bias = info["teacher_bias"]
    linear, fm, mlp = parts.T
    assert np.array_equal((linear + fm + mlp + bias).astype(np.float32), logits)  # float32
    exact = parts.astype(np.float64).sum(axis=1) + bias
    assert np.abs(exact - logits).max() < 1e-5
    assert (parts.std(axis=0) > 0.05).all()  # every term moves the logit


def test_shaped_like_criteo(generated):
    out, info = generated
    chunks = list(read_chunks(out / "train.txt"))
    dense = np.concatenate([c.dense for c in chunks])
    dmiss = np.concatenate([c.dense_missing for c in chunks]).mean(axis=0)
    cmiss = np.concatenate([c.cat_missing for c in chunks]).mean(axis=0)
    labels = np.concatenate([c.label for c in chunks])
    assert np.allclose(dmiss, DENSE_MISSING, atol=0.02)
    assert np.allclose(cmiss, CAT_MISSING, atol=0.02)
    assert abs(labels.mean() - 0.256) < 0.015
    i2 = dense[:, 1]
    assert i2.min() >= -3 and (i2 < 0).mean() > 0.01  # I2 has small negative values
    assert (dense[:, [0] + list(range(2, 13))] >= 0).all()
    assert dense[:, 4].max() > 100_000  # I5 is heavy-tailed
    cat = np.concatenate([c.cat for c in chunks])
    miss = np.concatenate([c.cat_missing for c in chunks])
    for f, card in enumerate(info["cardinality"].values()):
        values, counts = np.unique(cat[~miss[:, f], f], return_counts=True)
        assert len(values) <= card
        if card > 1000:  # Zipf-like: a few values carry much of the mass
            assert np.sort(counts)[-10:].sum() > 0.15 * counts.sum()
    # The teacher is informative: its AUC is the ceiling a model is judged against.
    assert roc_auc_score(labels, np.load(out / "teacher_logits.npy")) > 0.75
    # Correlated missingness, as in Criteo: C19 and C20 go missing together.
    assert (miss[:, 18] == miss[:, 19]).all()


def _missing(path) -> np.ndarray:
    """Rows x 39 missing flags, I1..I13 then C1..C26, as the project's reader sees them."""
    chunks = list(read_chunks(path))
    dense = np.concatenate([c.dense_missing for c in chunks])
    return np.concatenate([dense, np.concatenate([c.cat_missing for c in chunks])], axis=1)


def test_missing_values_match_real_criteo_rows(generated, criteo_sample):
    """Judged against real Kaggle rows (../shared), not against the generator's own constants.

    Each field's missing count in the 200 real rows must be a plausible draw from the
    generated rate (exact binomial test, p > 0.01; the smallest today is 0.10), and fields the
    real rows leave empty together (I1 & I10, C19 & C20 & C25 & C26, ...) must be empty
    together in the generated text.
    """
    out, _ = generated
    real, gen = _missing(criteo_sample), _missing(out / "train.txt")
    names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    for j, name in enumerate(names):
        k, rate = int(real[:, j].sum()), float(gen[:, j].mean())
        if rate == 0.0:
            assert k == 0, f"{name}: {k} of {len(real)} real rows are missing, generated none"
            continue
        p = binomtest(k, len(real), rate).pvalue
        assert p > 0.01, f"{name}: real {k}/{len(real)} missing vs generated {rate:.3f} (p={p:.1g})"
    together = [
        (a, b)
        for a in range(39)
        for b in range(a + 1, 39)
        if real[:, a].sum() >= 5 and (real[:, a] == real[:, b]).all()
    ]
    assert len(together) >= 10  # the sample shows the groups (C3, C4, C12, C16, C21, C24 ...)
    for a, b in together:
        agree = (gen[:, a] == gen[:, b]).mean()
        assert agree > 0.99, f"{names[a]} and {names[b]} go missing together in Criteo: {agree}"


def test_deterministic_and_prefix_stable(tmp_path, generated):
    out, _ = generated
    again = generate(tmp_path / "b", 5_000, seed=3, progress=False)
    text = (out / "train.txt").read_bytes()
    small = (tmp_path / "b" / "train.txt").read_bytes()
    assert text.startswith(small) and small.count(b"\n") == 5_000
    for name in ("teacher_logits.npy", "teacher_parts.npy"):
        assert np.array_equal(np.load(out / name)[:5_000], np.load(tmp_path / "b" / name))
    assert again["teacher_bias"] == json.loads((out / "generator.json").read_text())["teacher_bias"]
    other = generate(tmp_path / "c", 5_000, seed=4, progress=False)
    assert (tmp_path / "c" / "train.txt").read_bytes() != small
    assert other["seed"] == 4


def test_replaces_own_output_but_not_foreign_folder(tmp_path):
    out = tmp_path / "d"
    generate(out, 100, seed=1, progress=False)
    generate(out, 200, seed=1, progress=False)
    assert json.loads((out / "generator.json").read_text())["rows"] == 200
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        generate(foreign, 100, seed=1, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "mine"]
