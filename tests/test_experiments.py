"""Comparing runs the DVC way, on a copy of the tiny study that already ran once."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import run, tool_env


@pytest.fixture
def experiment_repo(study, tmp_path):
    """A private copy of the finished tiny study (outputs and DVC cache included)."""
    repo, _ = study
    copy = tmp_path / "exp"
    shutil.copytree(repo, copy, symlinks=True)
    return copy


def _stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.mark.slow
def test_changing_the_batch_size_reruns_only_what_reads_it(experiment_repo):
    out = run(experiment_repo, "dvc", "exp", "run", "-S", "train.batch_size=1000").stdout
    assert _stages_run(out) == {"train@CPU", "evaluate@CPU", "report"}
    diff = run(experiment_repo, "dvc", "params", "diff").stdout
    assert "train.batch_size" in diff and "1000" in diff
    metrics = json.loads((experiment_repo / "reports/metrics/CPU.json").read_text())
    assert metrics["rows"] > 0


@pytest.mark.slow
def test_a_second_target_is_trained_and_compared(experiment_repo):
    out = run(
        experiment_repo,
        "dvc",
        "exp",
        "run",
        "-S",
        "+targets.CPU_big.device=CPU",
        "-S",
        "+targets.CPU_big.train.batch_size=1000",
    ).stdout
    ran = _stages_run(out)
    assert {"train@CPU_big", "evaluate@CPU_big", "report"} <= ran
    assert "train@CPU" not in ran, "the existing target is up to date"
    for target in ("CPU", "CPU_big"):
        assert (experiment_repo / f"models/{target}/model.ckpt").is_file()
        assert json.loads((experiment_repo / f"reports/metrics/{target}.json").read_text())["auc"]
    html = (experiment_repo / "reports/index.html").read_text()
    assert "target <strong>CPU_big</strong>" in html and "target <strong>CPU</strong>" in html


@pytest.mark.slow
def test_a_code_change_marks_every_stage_that_runs_that_code(experiment_repo):
    # Stages that run a module must list it in dvc.yaml, or a change to it would leave
    # their outputs stale while dvc repro reports nothing to do.
    expected = {
        # the record layout: written by preprocess, read by train and evaluate
        "deepfm_lib/data/dataset.py": {"preprocess", "train@CPU", "evaluate@CPU"},
        "deepfm_lib/stages.py": {"data", "preprocess", "train@CPU", "evaluate@CPU"},
    }
    for rel, stages in expected.items():
        path = experiment_repo / rel
        original = path.read_text()
        path.write_text(original + "\n# changed\n")
        try:
            status = run(experiment_repo, "dvc", "status", "--json").stdout
        finally:
            path.write_text(original)
        assert stages <= set(json.loads(status)), (rel, status)


@pytest.mark.slow
def test_unavailable_device_fails_fast_with_what_is_offered(experiment_repo):
    proc = subprocess.run(
        ["dvc", "exp", "run", "-S", "+targets.GPU.device=GPU"],
        cwd=experiment_repo,
        capture_output=True,
        text=True,
        timeout=600,
        env=tool_env(),
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "'GPU' was requested" in text and "offers only: CPU" in text
    assert "targets.<name>.device" in text or "params.yaml" in text
    # it stopped at the start of train@GPU: no model was written for it
    assert not (experiment_repo / "models/GPU/model.ckpt").exists()


@pytest.mark.slow
def test_real_criteo_rows_under_the_clean_protocol(experiment_repo, criteo_sample):
    """The criteo source path of the pipeline, on the 200 real rows, with the clean protocol."""
    out = run(
        experiment_repo,
        "dvc",
        "exp",
        "run",
        "-S",
        "data.source=criteo",
        "-S",
        f"data.criteo_path={criteo_sample}",
        "-S",
        "preprocess.protocol=clean",
        "-S",
        "preprocess.threshold=1",
        "-S",
        "train.batch_size=40",
    ).stdout
    assert {"data", "preprocess", "train@CPU", "evaluate@CPU", "report"} <= _stages_run(out)
    data = json.loads((experiment_repo / "reports/metrics/preprocess.json").read_text())
    assert data["protocol"] == "clean" and sum(data["rows"].values()) == 200
    assert data["oracle_auc"] is None
    metrics = json.loads((experiment_repo / "reports/metrics/CPU.json").read_text())
    assert metrics["checkpoint"] == "best.ckpt" and metrics["rows"] == data["rows"]["test"]
    html = (experiment_repo / "reports/index.html").read_text()
    assert "Criteo Kaggle" in html and "0.8058" in html
