"""The teacher sweep: named teachers, the dense transform, and the checks on the protocol.

The sweep runs the study on two small teachers with the real stage functions, in this
process. On a teacher with first-order terms only (a small vocabulary, threshold 0: no
value folded into an out-of-vocabulary id), a tuned LR must not be beaten by DeepFM beyond
noise; on a teacher with pairwise terms only, FM must not be. A finding the other way would
mean the protocol favours a model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import REPO

from deepfm_lib import config
from deepfm_lib.data.synthetic import generate
from deepfm_lib.io import read_json
from deepfm_lib.pipeline import report, sweep

GRID = {"lr": [0.005, 0.02]}


def _raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep over the linear and pairwise teachers, three models, three seeds."""
    work = tmp_path_factory.mktemp("sweep")
    raw = _raw()
    raw["models"] = ["lr", "fm", "deepfm"]
    raw["data"]["synthetic"].update(scale=1e-5)  # at most 101 values a field: none folded
    raw["preprocess"].update(protocol="clean", threshold=0)
    raw["model"].update(emb_dim=8, deep_layers=[64, 32])
    raw["train"].update(seeds=[1001, 1002, 1003], batch_size=1000, epochs=12, patience=2)
    raw["tune"]["grid"] = {m: GRID for m in raw["models"]}
    raw["sweep"].update(enabled=True, teachers=["linear", "pairwise"], rows=40_000)
    params = config.parse(raw)
    metrics = work / "sweep.json"
    result = sweep.teacher_sweep(params, work / "runs", metrics)
    return params, work, metrics, result


@pytest.mark.slow
def test_sweep_writes_the_main_tables_statistics_per_teacher(swept):
    params, work, metrics, result = swept
    assert read_json(metrics) == json.loads(json.dumps(result))
    assert list(result["teachers"]) == ["linear", "pairwise"]
    for name, t in result["teachers"].items():
        assert t["settings"] == params.data.synthetic.teachers[name].model_dump()
        assert t["rows"] == {"train": 32_000, "valid": 4_000, "test": 4_000}
        assert set(t["models"]) == {"lr", "fm", "deepfm"}
        assert set(t["deepfm_minus_model"]) == {"lr", "fm"}
        for m in t["models"].values():
            assert m["gap"] == pytest.approx(t["oracle_auc"] - m["auc"])
            assert len(m["epochs"]) == 3
    linear = result["teachers"]["linear"]
    # First-order only: the linear part is the whole teacher; FM and MLP parts add nothing.
    parts = linear["oracle_parts"]
    assert parts["linear"] == parts["linear+fm"] == parts["all"] == linear["oracle_auc"]
    # scikit-learn's LR on the same rows is the independent check of the tuned lr.
    assert linear["models"]["lr"]["auc"] == pytest.approx(linear["reference_lr_auc"], abs=0.005)


@pytest.mark.slow
def test_no_model_beats_the_one_made_for_the_teacher(swept):
    _, _, _, result = swept
    for teacher, model in (("linear", "lr"), ("pairwise", "fm")):
        diff = result["teachers"][teacher]["deepfm_minus_model"][model]
        assert not (diff["real"] and diff["diff_mean"] > 0), (teacher, model, diff)


@pytest.mark.slow
def test_sweep_report_section(swept):
    _, _, _, result = swept
    frame = report.sweep_frame(result)
    assert len(frame) == 6 and set(frame["teacher"]) == {"linear", "pairwise"}
    table = report.sweep_table(result)
    assert list(table.index) == ["linear", "pairwise"]
    assert "beyond noise" in report.sweep_paragraph(result)
    report.sweep_figure(result)
    off = report.sweep_paragraph({"enabled": False})
    assert "dvc exp run -S sweep.enabled=true" in off


@pytest.mark.slow
def test_a_second_sweep_trains_nothing_and_drops_removed_teachers(swept):
    params, work, metrics, first = swept
    raw = params.model_dump()
    raw["sweep"]["teachers"] = ["linear"]
    again = sweep.teacher_sweep(config.parse(raw), work / "runs", work / "again.json")
    assert again["teachers"]["linear"]["models"] == first["teachers"]["linear"]["models"]
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["linear"]


def test_teacher_shapes_weigh_the_terms(tmp_path):
    base = generate(tmp_path / "base", 3000, seed=4, progress=False)
    assert base["teacher"] == config.TeacherParams().model_dump()
    shape = config.TeacherParams(linear=0.0, pairwise=2.0, higher_order=0.0)
    info = generate(tmp_path / "shaped", 3000, seed=4, teacher=shape, progress=False)
    assert info["teacher"]["pairwise"] == 2.0
    a = np.load(tmp_path / "base" / "teacher_parts.npy")
    b = np.load(tmp_path / "shaped" / "teacher_parts.npy")
    np.testing.assert_array_equal(b[:, 0], 0)
    np.testing.assert_array_equal(b[:, 2], 0)
    np.testing.assert_allclose(b[:, 1], 2 * a[:, 1], rtol=1e-6)
    with pytest.raises(ValueError, match="every term's weight is 0"):
        config.TeacherParams(linear=0.0, pairwise=0.0, higher_order=0.0)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("data", "synthetic", "teacher"), "quadratic", "not a teacher of data.synthetic.teachers"),
        (("sweep", "teachers"), ["linear", "nope"], "'nope' is not a teacher"),
        (("sweep", "teachers"), ["linear", "linear"], "lists a teacher twice"),
        (("sweep", "models"), ["lr", "xgboost"], "not a registered model"),
        (("sweep", "models"), ["lr", "deepfm", "lr"], "sweep.models lists a model twice"),
        (("preprocess", "dense"), "sqrt", "preprocess.dense"),
        (("data", "synthetic", "teachers", "linear", "mlp_gain"), 0, "mlp_gain"),
    ],
)
def test_bad_teacher_and_sweep_settings_are_refused(path, value, message):
    raw = _raw()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(config.ParamsError, match=message):
        config.parse(raw)


def test_an_enabled_sweep_needs_deepfm_and_synthetic_data():
    raw = _raw()
    raw["sweep"].update(enabled=True, models=["lr", "fm"])
    with pytest.raises(config.ParamsError, match="compares every model with DeepFM"):
        config.parse(raw)
    raw = _raw()
    raw["sweep"]["enabled"] = True
    raw["data"].update(source="criteo", criteo_path=str(REPO / "data" / "criteo"))
    with pytest.raises(config.ParamsError, match="needs data.source: synthetic"):
        config.parse(raw)


def test_log1p_needs_the_clean_protocol():
    raw = _raw()
    raw["preprocess"].update(protocol="zoo", dense="log1p")
    with pytest.raises(config.ParamsError, match=r"params.yaml: preprocess: dense = 'log1p'"):
        config.parse(raw)
