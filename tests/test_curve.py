"""The opt-in learning curve: its settings, a real tiny run, and what the report says of it."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
import yaml
from conftest import REPO, TINY, _merge

from deepfm_lib import config
from deepfm_lib.config import ParamsError
from deepfm_lib.pipeline import curve, report


def _params(base_params: dict, **curve_settings) -> config.Params:
    raw = _merge(_merge(base_params, TINY), {"curve": curve_settings})
    return config.parse(raw)


def test_a_point_draws_enough_lines_for_its_training_rows(base_params):
    base_params["preprocess"]["protocol"] = "zoo"
    params = _params(base_params, rows=[9000], threshold=2, train={"epochs": 5})
    point = params.for_curve(9000)
    # zoo protocol: 10 % test, so 10,000 lines leave 9,000 for training
    assert point.data.synthetic.rows == 10_000
    assert point.data.synthetic.seed == params.data.synthetic.seed  # the same teacher
    assert point.preprocess.threshold == 2 and params.preprocess.threshold == 5
    assert point.train_settings("CPU").epochs == 5
    assert point.model_settings().emb_dim == TINY["model"]["emb_dim"]  # not overridden
    clean = _params(base_params, rows=[8000])
    clean = clean.model_copy(
        update={"preprocess": clean.preprocess.model_copy(update={"protocol": "clean"})}
    )
    assert clean.for_curve(8000).data.synthetic.rows == 10_000  # 8:1:1


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"models": ["xgboost"]}, "curve.models: 'xgboost' is not a registered model"),
        ({"enabled": True, "target": "TPU"}, "targets.TPU: no such target"),
        ({"rows": [0]}, "curve.rows.0"),
        ({"seeds": [1]}, "unknown key 'curve.seeds'"),
    ],
)
def test_bad_curve_settings_are_named(base_params, settings, said):
    with pytest.raises(ParamsError, match="curve|TPU") as err:
        _params(base_params, **settings)
    assert said in str(err.value)


def test_the_curve_needs_the_synthetic_teacher(base_params, tmp_path):
    (tmp_path / "train.txt").write_text("")
    raw = _merge(base_params, {"data": {"source": "criteo", "criteo_path": str(tmp_path)}})
    raw["curve"] = {"enabled": True}
    with pytest.raises(ParamsError, match="curve.enabled = true needs data.source: synthetic"):
        config.parse(raw)


def test_switched_off_it_writes_only_that(base_params, tmp_path):
    out = tmp_path / "curve.json"
    assert curve.learning_curve(_params(base_params), out) == {"enabled": False}
    assert json.loads(out.read_text()) == {"enabled": False}
    text = report.curve_paragraph({"enabled": False})
    assert "not run" in text and "curve.enabled=true" in text


@pytest.fixture(scope="module")
def tiny_curve(tmp_path_factory) -> dict:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    params = _params(base, enabled=True, rows=[5400, 18000], models=["lr", "fm"], seed=1001)
    out = tmp_path_factory.mktemp("curve") / "curve.json"
    result = curve.learning_curve(params, out)
    assert json.loads(out.read_text()) == result
    return result


@pytest.mark.slow
def test_a_tiny_curve_measures_every_model_at_every_size(tiny_curve):
    points = tiny_curve["points"]
    assert set(points) == {"lr@5400", "fm@5400", "lr@18000", "fm@18000"}
    for key, p in points.items():
        model, rows = key.split("@")
        assert p["model"] == model and p["rows"] == int(rows)
        # the zoo protocol's block split: about 90 % of the lines train, in blocks of 1000
        assert abs(p["train_rows"] - int(rows)) <= 1000
        assert 0.5 < p["oracle_auc"] <= 1 and 0 < p["auc"] < 1
        assert p["oracle_linear"] <= p["oracle_linear+fm"] + 0.02
        assert p["epochs"] == TINY["train"]["epochs"]
    small, large = points["fm@5400"], points["fm@18000"]
    # the same teacher: a bigger draw keeps more values above the threshold
    assert large["test_oov_share"] < small["test_oov_share"]
    assert large["vocab_size"] > small["vocab_size"]
    assert points["lr@5400"]["test_oov_share"] == small["test_oov_share"]  # same data


@pytest.mark.slow
def test_the_report_states_the_curve_in_numbers(tiny_curve):
    text = report.curve_paragraph(tiny_curve)
    fm = tiny_curve["points"]["fm@18000"]
    assert f"{fm['auc']:.4f}" in text and f"{fm['oracle_auc'] - fm['auc']:.4f} below" in text
    assert "out-of-vocabulary" in text and "seed 1001" in text
    fig = report.curve_figure(tiny_curve)
    left, right = fig.axes
    assert {t.get_text() for t in left.get_legend().get_texts()} >= {"LR", "FM", "teacher (all)"}
    assert left.get_xscale() == "log"
    shares = right.lines[0].get_ydata()
    assert list(shares) == pytest.approx(
        [100 * tiny_curve["points"][f"lr@{n}"]["test_oov_share"] for n in (5400, 18000)]
    )
    plt.close(fig)
