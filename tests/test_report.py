"""The published page: offline HTML, and tables built from the files the pipeline writes."""

from __future__ import annotations

import json
import re
import shutil

import nbformat
import pandas as pd
import pytest
from conftest import TINY, run
from nbclient import NotebookClient
from sklearn.metrics import roc_auc_score

from deepfm_lib import config as params
from deepfm_lib.pipeline import report, significance


def _study(study):
    repo, _ = study
    results = report.load_study(
        repo / "reports/metrics", repo / "reports/train", repo / "reports/predictions"
    )
    return repo, report.order(results, TINY["models"], ["CPU"])


@pytest.mark.slow
def test_the_study_is_read_from_what_the_stages_wrote(study):
    repo, results = _study(study)
    assert list(results) == [f"{m}-CPU" for m in TINY["models"]]
    seeds = TINY["train"]["seeds"]
    for r in results.values():
        assert r.probs.shape[1] == len(seeds) and r.labels.shape[0] == r.probs.shape[0]
        assert r.curves.evals["epoch"].min() == 1, "epochs are 1-based, as the trainer writes"
        assert sorted(r.curves.loss["seed"].unique()) == seeds
    table = report.results_table(results, params.load(repo / "params.yaml"))
    assert table[["model", "seed"]].values.tolist() == [
        [m, s] for m in TINY["models"] for s in seeds
    ]
    # The record on disk is the same table, so a script reads what the page shows; the
    # MovieLens runs follow it as rows of their own data set.
    on_disk = pd.read_csv(repo / "reports/results.csv")
    assert set(on_disk["data"]) == {"synthetic", "movielens"}
    main_rows = on_disk[on_disk["data"] == "synthetic"].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        main_rows[["model", "seed", "auc"]],
        table[["model", "seed", "auc"]],
        check_exact=False,
        rtol=1e-9,
    )


@pytest.mark.slow
def test_comparisons_are_the_statistics_of_the_saved_predictions(study):
    _, results = _study(study)
    lr, deepfm = results["lr-CPU"], results["deepfm-CPU"]
    comp = report.comparisons(results, n_resamples=200).set_index("model")
    diff = significance.paired_difference(deepfm.seed_aucs(), lr.seed_aucs())
    assert comp.loc["lr", "diff_mean"] == pytest.approx(diff.mean)
    assert comp.loc["lr", "diff_ci95"] == f"[{diff.ci_low:+.4f}, {diff.ci_high:+.4f}]"
    worst = max(
        significance.delong_test(lr.labels, deepfm.probs[:, k], lr.probs[:, k]).p_value
        for k in range(2)
    )
    assert comp.loc["lr", "delong_p_max"] == pytest.approx(worst)
    expected_real = (diff.ci_low > 0 or diff.ci_high < 0) and worst < 0.05
    assert bool(comp.loc["lr", "real"]) == expected_real
    # The seeds' own AUCs are what the metrics say (scored on the same rows).
    assert roc_auc_score(lr.labels, lr.probs[:, 0]) == pytest.approx(lr.seed_aucs()[0], abs=1e-6)
    table = report.study_table(results, comp.reset_index())
    row = table.loc[("DeepFM", "CPU")]
    assert row["AUC mean ± SD"] == f"{deepfm.metrics['auc']:.4f} ± {deepfm.metrics['auc_sd']:.4f}"
    assert row["paper Table 2"] == 0.8007
    assert table.loc[("LR", "CPU"), "parameters"] == f"{lr.metrics['runs']['1001']['parameters']:,}"
    fig = report.seed_figure(
        results, {"oracle_parts": {"linear": 0.6, "linear+fm": 0.7, "all": 0.8}}
    )
    points = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert points >= len(TINY["models"]) * 2, "one point per model and seed"
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "teacher linear+fm: 0.7000" in labels


@pytest.mark.slow
def test_figures_and_tables_draw_every_run(study):
    repo, results = _study(study)
    loss = report.loss_figure(results)
    assert {t.get_text() for t in loss.axes[0].get_legend().get_texts()} >= set(results)
    auc = report.auc_figure(results, 0.8)
    assert len(auc.axes[0].lines) >= len(results)
    metrics = report.metrics_table(results)
    assert metrics.loc["deepfm-CPU", "auc"] == round(results["deepfm-CPU"].metrics["auc"], 4)
    data = json.loads((repo / "reports/metrics/preprocess.json").read_text())
    text = report.gap_paragraph(results, data)
    assert f"{data['oracle_auc']:.4f}" in text and "LR (" in text


def test_settings_and_zoo_facts_follow_params(base_params):
    base_params["targets"] = {"CPU": {}, "CPU_big": {"train": {"batch_size": 4000}}}
    base_params["preprocess"]["protocol"] = "zoo"
    p = params.parse(base_params)
    settings = report.settings_table(p)
    assert list(settings.columns) == ["CPU", "CPU_big"]
    assert settings.loc["train.batch_size"].tolist() == ["1000", "4000"]
    assert settings.loc["train.eps", "CPU"] == "5e-08"
    assert list(report.settings_table(p, only_differing=True).index) == ["train.batch_size"]
    facts = report.zoo_facts(p, vocab_size=184_965, fields=39)
    assert facts["this run"].str.contains("followed").sum() == 4  # protocol zoo, dense Adam
    base_params["targets"]["CPU_big"]["train"]["lazy_adam"] = True
    lazy = params.parse(base_params)
    facts = report.zoo_facts(lazy, vocab_size=None, fields=None)
    assert "changed on CPU_big" in facts.iloc[-1]["this run"]
    base_params["preset"] = "zoo"
    zoo = report.zoo_facts(params.parse(base_params), vocab_size=184_965, fields=39)
    assert zoo.loc[0, "this run"].startswith("18,867,222 parameters")
    assert "the zoo's config" in zoo.loc[2, "this run"]
    # Data-parallel: the report shows the workers and the GLOBAL batch (all ranks together,
    # as params.yaml says it), not a rank's share.
    base_params["targets"]["CPU"].update(workers=2)
    ranks = params.parse(base_params)
    assert report.settings_table(ranks).loc[["workers", "train.batch_size"], "CPU"].tolist() == [
        "2",
        "16000",
    ]
    assert (
        report.zoo_facts(ranks, vocab_size=None, fields=None)
        .loc[2, "this run"]
        .startswith("batch 16000,")
    )


@pytest.mark.slow
def test_the_report_is_the_same_bytes_when_rerun(study, tmp_path):
    """Same metrics in, same page out: no random table ids, no timestamps."""
    repo, _ = study
    copy = tmp_path / "again"
    shutil.copytree(repo, copy, symlinks=True)
    outputs = ["reports/index.html", "reports/results.csv", "reports/notebooks/05_report.ipynb"]
    before = {o: (copy / o).read_bytes() for o in outputs}
    run(copy, "dvc", "repro", "--force", "--single-item", "report")
    for o in outputs:
        assert (copy / o).read_bytes() == before[o], o


def test_html_export_is_self_contained(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title with $x^2$ maths"),
            nbformat.v4.new_code_cell(
                "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0]);\nsecret_input = 1"
            ),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    src = tmp_path / "r.ipynb"
    nbformat.write(nb, src)
    html = tmp_path / "index.html"
    report.export_html(src, html)
    page = html.read_text()
    assert "data:image/png;base64," in page
    assert "secret_input" not in page, "input cells must be hidden"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no request may leave the file"
    assert not list(tmp_path.glob(".index.html.tmp*"))
