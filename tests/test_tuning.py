"""Per-model tuning on validation, early stopping, and the scikit-learn oracle for LR.

One small synthetic data set (60,000 rows, clean protocol) is tuned, trained and scored
with the real stage functions, in this process.
"""

from __future__ import annotations

import json
import shutil

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml
from conftest import REPO

from deepfm_lib import config
from deepfm_lib.io import read_json
from deepfm_lib.pipeline import reference, report, stages, tuning

GRID = {"lr": [0.005, 0.01], "l2": [0.0]}


@pytest.fixture(scope="module")
def tuned_lr(tmp_path_factory):
    """The lr model tuned, trained over two seeds and scored on a small data set."""
    work = tmp_path_factory.mktemp("tuning")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["models"] = ["lr"]
    raw["data"]["synthetic"].update(rows=60_000, scale=0.001)
    raw["preprocess"].update(protocol="clean", threshold=20)
    raw["train"].update(seeds=[1001, 1002], batch_size=500, epochs=20, patience=2)
    raw["tune"]["grid"] = {"lr": GRID}
    params = config.parse(raw)
    data = work / "processed"
    stages.make_data(params, work / "raw")
    stages.preprocess(params, work / "raw", data, work / "preprocess.json")
    paths = {
        "tune_dir": work / "tune",
        "result_path": work / "tune.json",
        "plots": work / "tune_plots",
        "model_dir": work / "models",
    }
    result = tuning.tune(
        params, "lr", "CPU", data, paths["tune_dir"], paths["result_path"], paths["plots"]
    )
    tuning.train(
        params,
        "lr",
        "CPU",
        data,
        paths["model_dir"],
        work / "train_plots",
        paths["result_path"],
        paths["tune_dir"],
    )
    metrics = stages.evaluate(
        tuning.tuned(params, result),
        "lr",
        "CPU",
        data,
        paths["model_dir"],
        work / "metrics.json",
        work / "predictions.npz",
    )
    return {"params": params, "data": data, "result": result, "metrics": metrics, **paths}


def test_every_point_is_tried_and_the_best_validation_auc_wins(tuned_lr):
    result = tuned_lr["result"]
    assert json.loads(tuned_lr["result_path"].read_text()) == result
    assert result["split"] == "valid" and not result["test_steered"]
    assert result["seed"] == 1001 and result["patience"] == 2 and result["max_epochs"] == 20
    assert list(result["points"]) == ["lr=0.005,l2=0", "lr=0.01,l2=0"]
    best = max(result["points"].values(), key=lambda p: p["auc"])
    assert result["chosen"]["auc"] == best["auc"] and result["chosen"]["settings"] in [
        {"lr": 0.005, "l2": 0.0},
        {"lr": 0.01, "l2": 0.0},
    ]
    for name, point in result["points"].items():
        aucs = [c["auc"] for c in point["curve"]]
        # early stopping: two epochs without a better AUC after the best one (or the cap)
        assert point["epochs"] == min(point["best_epoch"] + 2, 20) == len(aucs)
        assert point["auc"] == max(aucs) == aucs[point["best_epoch"] - 1]
        plot = pd.read_csv(tuned_lr["plots"] / f"{name}.csv")
        assert plot["auc"].tolist() == pytest.approx(aucs, abs=1e-9)


def test_every_seed_runs_with_the_chosen_settings_and_the_search_run_is_reused(tuned_lr):
    chosen = tuned_lr["result"]["chosen"]
    search = tuned_lr["tune_dir"] / chosen["point"]
    for seed in (1001, 1002):
        run_dir = stages.seed_dir(tuned_lr["model_dir"], seed)
        fingerprint = read_json(run_dir / "checkpoints" / "run.json")
        assert fingerprint["train"]["lr"] == chosen["settings"]["lr"]
        summary = read_json(run_dir / "train_summary.json")
        if seed == 1001:  # the search's own run: nothing retrained, same curve
            assert summary["steps_this_run"] == 0 and summary["samples_per_s"] is not None
            assert (run_dir / "eval.csv").read_bytes() == (search / "eval.csv").read_bytes()
        else:
            assert summary["steps_this_run"] > 0
    runs = tuned_lr["metrics"]["runs"]
    assert runs["1001"]["checkpoint"] == "best.ckpt"
    assert runs["1001"]["checkpoint_epoch"] == chosen["epoch"]
    assert tuned_lr["metrics"]["settings"]["lr"] == chosen["settings"]["lr"]
    assert tuned_lr["metrics"]["settings"]["patience"] == 2


def test_tuned_lr_matches_scikit_learn_logistic_regression(tuned_lr):
    """The oracle: an independent, converged LR (C chosen on validation) on the same splits.

    A gap above 0.001 AUC means the study's lr is not trained or tuned far enough.
    """
    ref = reference.sklearn_lr(tuned_lr["data"], [0.01, 0.1, 1.0])
    assert ref["chosen_on"] == "valid" and ref["rows"] == tuned_lr["metrics"]["rows"]
    for seed, run in tuned_lr["metrics"]["runs"].items():
        assert run["auc"] == pytest.approx(ref["auc"], abs=1e-3), seed


def test_a_smaller_grid_removes_the_dropped_points_and_retrains_nothing(tuned_lr, tmp_path):
    tune_dir, plots = tmp_path / "tune", tmp_path / "plots"
    shutil.copytree(tuned_lr["tune_dir"], tune_dir)
    shutil.copytree(tuned_lr["plots"], plots)
    keep = tuned_lr["result"]["chosen"]["settings"]
    params = tuned_lr["params"]
    raw = params.model_dump()
    raw["tune"]["grid"]["lr"] = {k: [v] for k, v in keep.items()}
    smaller = config.parse(raw)
    data = tuned_lr["data"]
    again = tuning.tune(smaller, "lr", "CPU", data, tune_dir, tmp_path / "t.json", plots)
    name = tuned_lr["result"]["chosen"]["point"]
    assert list(again["points"]) == [name] and again["chosen"] == tuned_lr["result"]["chosen"]
    assert sorted(p.name for p in tune_dir.iterdir()) == [name]
    assert sorted(p.name for p in plots.iterdir()) == [f"{name}.csv"]
    assert read_json(tune_dir / name / "train_summary.json")["steps_this_run"] == 0


def test_the_report_shows_the_protocol_the_grid_and_the_choice(tuned_lr):
    result = tuned_lr["result"]
    tunings = {"lr-CPU": result}
    text = report.protocol_paragraph(tuned_lr["params"], tunings)
    assert "early stopping on the **validation** AUC" in text
    assert "once on the test split" in text and "The test split chose nothing" in text
    table = report.tune_table(tunings)
    assert len(table) == 2 and (table["chosen"] == "✓").sum() == 1
    chosen_row = table[table["chosen"] == "✓"].iloc[0]
    assert chosen_row["validation AUC"] == f"{result['chosen']['auc']:.4f}"
    fig = report.tune_figure(tunings)
    assert len(fig.axes[0].lines) == 3  # two points and the chosen marker
    plt.close(fig)
    zoo = {"lr-CPU": {**result, "split": "test", "test_steered": True}}
    assert "test split chose the settings" in report.protocol_paragraph(tuned_lr["params"], zoo)
