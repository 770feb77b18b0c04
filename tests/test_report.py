"""The published page: offline HTML, and tables built from the files the pipeline writes."""

from __future__ import annotations

import re

import nbformat
import pandas as pd
from nbclient import NotebookClient

from deepfm_lib import config as params
from deepfm_lib.pipeline import report
from deepfm_lib.io import write_json


def _write_run(root, target, auc):
    tdir = root / "train" / target
    tdir.mkdir(parents=True)
    pd.DataFrame({"step": [1, 2, 3], "epoch": [0, 0, 1], "loss": [0.7, 0.6, 0.5]}).to_csv(
        tdir / "loss.csv", index=False
    )
    pd.DataFrame({"epoch": [0, 1], "auc": [0.6, auc], "logloss": [0.6, 0.55]}).to_csv(
        tdir / "eval.csv", index=False
    )
    write_json(
        root / "metrics" / f"{target}.json",
        {"device": "CPU", "auc": auc, "logloss": 0.5, "accuracy": 0.7, "rows": 10},
    )


def test_runs_and_tables_come_from_pipeline_files(tmp_path, base_params):
    _write_run(tmp_path, "CPU", 0.71)
    _write_run(tmp_path, "CPU_big", 0.73)
    (tmp_path / "train" / "unfinished").mkdir()  # trained, never evaluated: not reported
    runs = report.load_runs(tmp_path / "metrics", tmp_path / "train")
    assert list(runs) == ["CPU", "CPU_big"]
    table = report.metrics_table(runs)
    assert table.loc["CPU_big", "auc"] == 0.73
    cmp = report.comparison_table(runs, {"oracle_auc": 0.8}, synthetic=True)
    assert cmp.loc["teacher that generated the labels (oracle)", "auc"] == 0.8
    real = report.comparison_table(runs, {}, synthetic=False)
    assert 0.8058 in set(real["auc"])
    base_params["targets"] = {"CPU": {}, "CPU_big": {"train": {"batch_size": 4000}}}
    p = params.parse(base_params)
    settings = report.settings_table(p)
    assert list(settings.columns) == ["CPU", "CPU_big"]
    assert settings.loc["train.batch_size"].tolist() == ["1000", "4000"]
    assert settings.loc["train.eps", "CPU"] == "5e-08"
    text = report.headline(p, runs, {"rows": {"train": 9, "test": 1}, "oracle_auc": 0.8})
    assert "0.7300" in text and "synthetic" in text
    assert list(report.settings_table(p, only_differing=True).index) == ["train.batch_size"]
    facts = report.zoo_facts(p, vocab_size=184_965)
    assert facts["this run"].str.contains("followed").sum() == 4  # protocol zoo, dense Adam
    base_params["targets"]["CPU_big"]["train"]["fast"] = True
    fast = params.parse(base_params)
    assert "changed on CPU_big" in report.zoo_facts(fast, vocab_size=None).iloc[-1]["this run"]
    assert "not the zoo's numbers" in report.headline(fast, runs, {"rows": {}})
    base_params["preset"] = "zoo"
    zoo = report.zoo_facts(params.parse(base_params), vocab_size=184_965)
    assert zoo.loc[0, "this run"].startswith("18,867,222 parameters")
    assert "the zoo's config" in zoo.loc[2, "this run"]
    report.loss_figure(runs)
    report.auc_figure(runs, 0.8)


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
