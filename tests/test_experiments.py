"""Comparing runs the DVC way, on a copy of the tiny study that already ran once."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml
from conftest import TINY, TINY_RESULTS, assert_pinned, run, tool_env

# DeepFM of the tiny study at batch 1000 (measured 2026-12-07 under the tuned protocol, like
# TINY_RESULTS).
BATCH_1000 = {
    1001: (0.5827254245395839, 0.5754276558860764),
    1002: (0.49325819182013875, 0.5738037455085021),
}


@pytest.fixture
def experiment_repo(study, tmp_path):
    """A private copy of the finished tiny study (outputs and DVC cache included)."""
    repo, _ = study
    copy = tmp_path / "exp"
    shutil.copytree(repo, copy, symlinks=True)
    return copy


def _metrics(repo, name: str) -> dict:
    return json.loads((repo / f"reports/metrics/{name}.json").read_text())


def _both(name: str) -> set[str]:
    return {f"train@{name}", f"evaluate@{name}"}


def _stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.mark.slow
def test_changing_the_batch_size_reruns_only_what_reads_it(experiment_repo):
    # `dvc repro --dry` names the stages whose own dependencies changed; what they feed
    # (evaluate@...) follows by DVC's graph. The real rerun of changed settings, with its
    # pinned figures and `dvc params diff` / `dvc metrics diff`, is the second target below.
    params = yaml.safe_load((experiment_repo / "params.yaml").read_text())
    params["train"]["batch_size"] = 1000
    (experiment_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(experiment_repo, "dvc", "repro", "--dry").stdout
    assert _stages_run(out) == {
        *(f"{stage}@{m}-CPU" for stage in ("tune", "train") for m in TINY["models"]),
        # The learning curve and the teacher sweep train with the study's settings when they
        # are on; DVC cannot make that conditional, so the stages rerun (switched off they
        # only rewrite their JSON).
        "curve",
        "sweep",
        "movielens",
        "report",
    }
    diff = run(experiment_repo, "dvc", "params", "diff").stdout
    assert "train.batch_size" in diff and "1000" in diff


@pytest.mark.slow
def test_a_second_target_is_trained_and_compared(experiment_repo):
    out = run(
        experiment_repo,
        "dvc",
        "exp",
        "run",
        "-S",
        "models=[deepfm]",  # what is tested is the second target; LR would only add time
        "-S",
        "+targets.CPU_big.device=CPU",
        "-S",
        "+targets.CPU_big.train.batch_size=1000",
    ).stdout
    ran = _stages_run(out)
    assert {"tune@deepfm-CPU_big", "train@deepfm-CPU_big", "evaluate@deepfm-CPU_big"} <= ran
    assert "report" in ran
    assert "train@deepfm-CPU" not in ran, "the existing target is up to date"
    for target in ("CPU", "CPU_big"):
        for seed in TINY["train"]["seeds"]:
            assert (experiment_repo / f"models/deepfm-{target}/seed{seed}/model.ckpt").is_file()
        metrics = _metrics(experiment_repo, f"deepfm-{target}")
        for seed in TINY["train"]["seeds"]:
            # CPU keeps the tiny study's runs; CPU_big (batch 1000) trains like the
            # batch-size experiment above.
            expected = TINY_RESULTS["deepfm", seed] if target == "CPU" else BATCH_1000[seed]
            assert_pinned(metrics["runs"][str(seed)], expected, f"{target} seed {seed}")
    for seed in TINY["train"]["seeds"]:
        # Trained at the target's batch (the search seed by the tune stage, DeepFM's one
        # grid point; the others by the train stage), with its speed measured.
        run_dir = experiment_repo / f"models/deepfm-CPU_big/seed{seed}"
        search = experiment_repo / "models/tune/deepfm-CPU_big/preset"
        trained_by = search if seed == 1001 else run_dir
        fresh = json.loads((trained_by / "train_summary.json").read_text())
        assert fresh["batch_size"] == 1000 and fresh["samples_this_run"] > 0
        assert fresh["samples_per_s"] is not None
    html = (experiment_repo / "reports/index.html").read_text()
    assert "DeepFM</strong> on CPU_big" in html and "DeepFM</strong> on CPU:" in html
    assert "targets.CPU_big" in run(experiment_repo, "dvc", "params", "diff").stdout
    shown = json.loads(run(experiment_repo, "dvc", "metrics", "diff", "--json").stdout)
    assert "reports/metrics/deepfm-CPU_big.json" in shown


@pytest.mark.slow
def test_a_code_change_marks_every_stage_that_runs_that_code(experiment_repo):
    # Stages that run a module must list it in dvc.yaml, or a change to it would leave
    # their outputs stale while dvc repro reports nothing to do.
    expected = {
        # the record layout: written by preprocess, read by train and evaluate
        "deepfm_lib/data/dataset.py": {"preprocess", *_both("deepfm-CPU"), *_both("lr-CPU")},
        "deepfm_lib/pipeline/stages.py": {"data", "preprocess", *_both("deepfm-CPU")},
        "deepfm_lib/models/blocks.py": {*_both("lr-CPU"), *_both("deepfm-CPU")},
        "deepfm_lib/engine/step.py": {*_both("lr-CPU"), *_both("deepfm-CPU")},
        "deepfm_lib/pipeline/significance.py": {"report"},
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
def test_a_rerun_resumes_only_when_the_training_code_is_unchanged(experiment_repo):
    # Issue 18.1: checkpoints are reused only for the code, settings and data that made them.
    summary_path = experiment_repo / "models/lr-CPU/seed1001/train_summary.json"
    model_path = experiment_repo / "models/lr-CPU/seed1001/model.ckpt"
    before, weights = json.loads(summary_path.read_text()), model_path.read_bytes()
    # Nothing changed: a forced rerun resumes the finished run, trains nothing, and still
    # publishes the speed of the run that made these weights (never null).
    run(experiment_repo, "dvc", "repro", "--force", "--single-item", "train@lr-CPU")
    same = json.loads(summary_path.read_text())
    assert same["resumed_from_step"] == before["steps"] and same["samples_this_run"] == 0
    assert same["samples_per_s"] == before["samples_per_s"] is not None
    assert model_path.read_bytes() == weights
    # A dependency of training other than the model files (a comment in the train step):
    # DVC reruns the stage, and the run starts over instead of resuming.
    step = experiment_repo / "deepfm_lib/engine/step.py"
    step.write_text(step.read_text() + "\n# changed\n")
    run(experiment_repo, "dvc", "repro", "--single-item", "train@lr-CPU")
    fresh = json.loads(summary_path.read_text())
    assert fresh["resumed_from_step"] is None and fresh["samples_this_run"] > 0
    notebook = (experiment_repo / "reports/notebooks/03_train_lr-CPU.ipynb").read_text()
    assert "starting over" in notebook


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
    assert not list((experiment_repo / "models").glob("*-GPU/seed*/model.ckpt"))


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
        "models=[deepfm]",  # the criteo source path is tested; LR would only add time
        "-S",
        "train.batch_size=40",
    ).stdout
    assert {"data", "preprocess", *_both("deepfm-CPU"), "report"} <= _stages_run(out)
    data = json.loads((experiment_repo / "reports/metrics/preprocess.json").read_text())
    assert data["protocol"] == "clean" and sum(data["rows"].values()) == 200
    assert data["oracle_auc"] is None
    metrics = _metrics(experiment_repo, "deepfm-CPU")
    assert metrics["rows"] == data["rows"]["test"]
    assert {r["checkpoint"] for r in metrics["runs"].values()} == {"best.ckpt"}
    html = (experiment_repo / "reports/index.html").read_text()
    assert "Criteo Kaggle" in html and "0.8058" in html


@pytest.mark.slow
def test_a_second_repro_in_the_same_workspace_is_refused_while_one_runs(experiment_repo):
    before = (experiment_repo / "reports/index.html").read_bytes()
    first = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", "report"],
        cwd=experiment_repo,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen = []
        for line in first.stdout:  # wait until it holds the lock and is running the stage
            seen.append(line)
            if line.startswith("Running stage 'report'"):
                break
        else:
            pytest.fail("the first repro never started the report stage:\n" + "".join(seen))
        second = subprocess.run(
            ["dvc", "repro"],
            cwd=experiment_repo,
            env=tool_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        rest, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode != 0
    # DVC holds its repo lock while it plans and its read/write lock on a stage's files while
    # the command runs: the second repro meets one or the other, depending on the moment.
    said = second.stdout + second.stderr
    refused = ("Unable to acquire lock", "is busy, it is being blocked by")
    assert any(r in said for r in refused), second.stderr[-2000:]
    assert "Running stage" not in second.stdout, "the refused run started nothing"
    assert first.returncode == 0, "".join(seen) + rest
    # Nothing corrupted: the forced report is the same bytes and the workspace is up to date.
    assert (experiment_repo / "reports/index.html").read_bytes() == before
    assert "up to date" in run(experiment_repo, "dvc", "status").stdout.lower()
