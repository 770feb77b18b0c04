"""Data-parallel training with msrun: 2 CPU workers on loopback, the tiny study's data.

One `dvc repro` of the tiny study with `workers: 2` (shared by the tests below) is the
uninterrupted two-worker run. Its data leaves the ranks uneven on purpose: 5 training
records of 1000 rows give rank 0 three and rank 1 two (rank 1 steps with empty batches for
the last 4 of every epoch's 12 steps), and the single test record leaves rank 1 no
validation rows at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import yaml
from conftest import TINY, _merge, assert_pinned, copy_repo, git, run, tiny_params

from deepfm_lib import config as params_mod
from deepfm_lib.config import ClusterParams
from deepfm_lib.data.dataset import iter_batches, split_rows
from deepfm_lib.engine.parallel import (
    DistributedError,
    equal_steps,
    launch,
    msrun_command,
    steps_per_epoch,
)

SEED = 1001
RUN = f"models/deepfm-CPU/seed{SEED}"  # the study's one run
KILL_BOUND_S = 60  # the bound: a dead worker ends the job within about a minute


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(repo_root, tmp_path_factory) -> Path:
    """The tiny study run once by `dvc repro` with its CPU target on two workers."""
    repo = copy_repo(repo_root, tmp_path_factory.mktemp("study2"))
    params = tiny_params(yaml.safe_load((repo / "params.yaml").read_text()))
    # One model, one seed: what is tested is the data-parallel run, not the study's breadth.
    params["models"], params["train"]["seeds"] = ["deepfm"], [SEED]
    # The zoo protocol and two full epochs: the run compared step by step with one process
    # below scores every epoch on the test split and stops nowhere early.
    params["preprocess"]["protocol"] = "zoo"
    params["train"].update(epochs=2, patience=0)
    params["targets"]["CPU"].update(workers=2, master_port=free_port())
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny study on two workers")
    # Up to the scores: the report, the reference LR, the curve and the sweep add nothing
    # about ranks (the report's global batch: test_report's zoo facts).
    run(repo, "dvc", "repro", "evaluate@deepfm-CPU")
    return repo


def load_params(repo: Path, monkeypatch) -> params_mod.Params:
    monkeypatch.chdir(repo)  # params.yaml's paths are relative to the study
    return params_mod.load(repo / "params.yaml")


# -- settings and helpers (no job started) ---------------------------------------------------
def test_cluster_settings_are_validated(base_params, tmp_path):
    def check(**target):
        raw = _merge(base_params, {"data": {"criteo_path": str(tmp_path)}})
        raw["targets"] = {"CPU": {"device": "CPU", **target}}
        return params_mod.parse(raw)

    assert check(workers=2, nodes=5, node_rank=4).target("CPU").world_size == 10
    for bad, needle in (
        ({"workers": 0}, "workers"),
        ({"nodes": 0}, "nodes"),
        ({"master_port": 80}, "master_port"),
        ({"master_port": 70000}, "master_port"),
        ({"nodes": 2, "node_rank": 2}, "node_rank = 2"),
        ({"workers": 3}, "multiple of 3"),  # the small preset's global batch 1000
    ):
        with pytest.raises(params_mod.ParamsError, match=needle):
            check(**bad)


def test_every_rank_runs_the_longest_ranks_steps():
    assert steps_per_epoch([1600, 1400], 200) == 8
    short = [(np.ones((200, 39), np.int32), np.ones((200, 39), np.float32), np.ones((200, 1)))] * 7
    padded = list(equal_steps(iter(short), 8, 39))
    assert len(padded) == 8 and padded[-1][0].shape == (0, 39) and padded[-1][2].shape == (0, 1)
    with pytest.raises(ValueError, match="more than the 6 batches"):
        list(equal_steps(iter(short), 6, 39))


def test_msrun_command_names_this_node_and_the_worker_module(tmp_path):
    cluster = ClusterParams(
        workers=4, nodes=2, node_rank=1, master_addr="10.0.0.5", master_port=9000
    )
    assert list(cluster.local_ranks) == [4, 5, 6, 7]
    cmd = msrun_command(cluster, ["--target", "GPU"], tmp_path, cluster_timeout_s=60)
    for flag in (
        "--worker_num=8",
        "--local_worker_num=4",
        "--master_addr=10.0.0.5",
        "--master_port=9000",
        "--node_rank=1",
        "--join=True",
        "--cluster_time_out=60",
        f"--log_dir={tmp_path}",
    ):
        assert flag in cmd
    assert cmd[-6:] == ["python", "-m", "deepfm_lib.pipeline.worker", "worker", "--target", "GPU"]


def test_a_taken_port_fails_at_once_and_starts_nothing(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        with pytest.raises(DistributedError, match=f"master_port {port} .* already in use"):
            launch(ClusterParams(workers=2, master_port=port), [], tmp_path)
        assert {p.pid for p in psutil.Process().children(recursive=True)} == before


# -- real jobs -------------------------------------------------------------------------------
@pytest.mark.slow
def test_dvc_repro_with_two_workers(two_ranks):
    summary = json.loads((two_ranks / RUN / "train_summary.json").read_text())
    assert summary["ranks"] == 2 and summary["batch_size"] == TINY["train"]["batch_size"]
    assert summary["batch_size_per_rank"] == TINY["train"]["batch_size"] // 2
    metrics = json.loads((two_ranks / "reports/metrics/deepfm-CPU.json").read_text())
    # Pinned, measured with conftest.TINY_RESULTS (same commit and run). Two ranks have
    # figures of their own, not those of the one-process tiny study.
    assert_pinned(metrics["runs"]["1001"], (0.5388722214285336, 0.565583263927043), "2 ranks")
    assert metrics["rows"] > 0
    # The search seed's run is trained by the tune stage (its one grid point) and reused.
    notebook = (two_ranks / "reports/notebooks/02_tune_deepfm-CPU.ipynb").read_text()
    assert "[rank 0]" in notebook and "[rank 1]" in notebook  # the workers' logs, streamed


def reference_run(params, data_dir: Path, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One process training on exactly the rows the two ranks see, step by step.

    Step t's batch is rank 0's batch t followed by rank 1's batch t, so a correct data-parallel
    step (the gradient of the mean loss over both ranks' rows) is this process's step.
    """
    from deepfm_lib.engine.device import use_device
    from deepfm_lib.engine.trainer import train
    from deepfm_lib.io import read_json

    use_device("CPU")
    local = params.train_settings("CPU").batch_size // 2
    steps = steps_per_epoch([split_rows(data_dir, "train", 2, k) for k in range(2)], local)

    def batches(epoch):
        ranks = [
            equal_steps(
                iter_batches(
                    data_dir, "train", local, shuffle=True, seed=SEED, epoch=epoch,
                    num_shards=2, shard_id=k,
                ),
                steps,
                39,
            )
            for k in range(2)
        ]  # fmt: skip
        for parts in zip(*ranks, strict=True):
            yield tuple(np.concatenate(column) for column in zip(*parts, strict=True))

    def evals():
        return iter_batches(data_dir, "test", 1000, shuffle=False, seed=0)

    stats = read_json(data_dir / "stats.json")
    cfg = params.train_config("CPU", SEED)
    net_cfg = params.network_config("deepfm", "CPU", stats["vocab_size"], stats["data"]["width"])
    train(net_cfg, cfg, batches, evals, out, progress=False)
    return pd.read_csv(out / "loss.csv"), pd.read_csv(out / "eval.csv")


@pytest.mark.slow
def test_two_workers_train_like_one_process_with_the_global_batch(two_ranks, tmp_path, monkeypatch):
    params = load_params(two_ranks, monkeypatch)
    data_dir, model = two_ranks / "data/processed", two_ranks / RUN
    assert steps_per_epoch([split_rows(data_dir, "train", 2, k) for k in range(2)], 250) == 12
    assert split_rows(data_dir, "train", 2, 1) == 2000 and split_rows(data_dir, "test", 2, 1) == 0

    # Written once, by rank 0: one loss row per step (two appending ranks would double
    # them), one eval row per epoch, and the eval lines only in rank 0's log.
    loss = pd.read_csv(model / "loss.csv")
    assert loss["step"].tolist() == list(range(1, 25))
    evals = pd.read_csv(model / "eval.csv")
    assert evals["epoch"].tolist() == [1, 2]
    for name in ("model.ckpt", "best.ckpt", "checkpoints/run.json"):
        assert (model / name).is_file(), name
    # The search seed trained in the tune stage (DeepFM's one grid point); its logs are there.
    logs = two_ranks / "models/tune/deepfm-CPU/preset/logs"
    assert "eval AUC" in (logs / "worker_0.log").read_text()
    assert "eval AUC" not in (logs / "worker_1.log").read_text()
    assert "replicas hold identical weights" in (logs / "worker_1.log").read_text()
    summary = json.loads((logs.parent / "train_summary.json").read_text())
    assert summary["samples_this_run"] == 2 * split_rows(data_dir, "train")
    reused = json.loads((model / "train_summary.json").read_text())  # the train stage's copy
    assert reused["samples_this_run"] == 0 and reused["steps"] == summary["steps"]
    # Rank 1 holds none of the validation rows; the gathered eval scores all of them.
    assert summary["final_metrics"]["rows"] == split_rows(data_dir, "test")

    # The curve one process draws on the same rows. Tolerance: the all-reduce adds the
    # ranks' partial gradient sums where one process sums all rows at once; the float32
    # rounding of the two orders differs by ~1e-7 relative per step and stayed below 1e-6
    # over these 24 Adam steps, so 1e-5 leaves room, while a wrong mean (plain averaging
    # when rank 1's batch is empty: a 2x error on 8 of the steps) or a missing all-reduce
    # is orders of magnitude outside it.
    ref_loss, ref_eval = reference_run(params, data_dir, tmp_path / "ref")
    np.testing.assert_allclose(loss["loss"], ref_loss["loss"], rtol=1e-5)
    np.testing.assert_allclose(evals[["auc", "logloss"]], ref_eval[["auc", "logloss"]], rtol=1e-5)


def _rank_pid(procs: dict[int, psutil.Process], rank: int) -> int | None:
    for pid, p in procs.items():
        try:
            env = p.environ()
        except psutil.Error:
            continue
        if env.get("MS_ROLE") == "MS_WORKER" and env.get("RANK_ID") == str(rank):
            return pid
    return None


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.slow
def test_a_killed_worker_ends_the_job_and_a_rerun_resumes(two_ranks, tmp_path):
    model = tmp_path / "model"
    cmd = [
        sys.executable, "-m", "deepfm_lib.distributed", "launch", "--model", "deepfm",
        "--target", "CPU", "--data-dir", "data/processed", "--model-dir", str(model),
        "--plots-dir", str(tmp_path),
    ]  # fmt: skip
    job = subprocess.Popen(
        cmd, cwd=two_ranks, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    launcher = psutil.Process(job.pid)
    seen: dict[int, psutil.Process] = {}
    try:
        # Freeze rank 1 once rank 0 has written its first checkpoint (end of epoch 1): with
        # rank 1 stopped, rank 0 waits in the all-reduce, so the job cannot finish first.
        deadline = time.monotonic() + 120
        victim = None
        while victim is None:
            assert job.poll() is None, job.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            seen.update({p.pid: p for p in launcher.children(recursive=True)})
            if list((model / f"seed{SEED}/checkpoints").glob("step_*.ckpt")):
                victim = _rank_pid(seen, 1)
            time.sleep(0.05)
        os.kill(victim, signal.SIGSTOP)
        seen.update({p.pid: p for p in launcher.children(recursive=True)})
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        output, _ = job.communicate(timeout=KILL_BOUND_S + 30)
        took = time.monotonic() - killed_at
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode != 0
    assert took < KILL_BOUND_S, f"the job took {took:.0f} s to fail"
    assert f"rank 1 (pid {victim}) was killed by SIGKILL" in output, output[-3000:]
    assert len(seen) >= 4, seen  # msrun, its scheduler, two workers
    left = [p for p in seen.values() if _alive(p)]
    assert not left, f"processes left behind: {[p.cmdline() for p in left]}"

    # The rerun resumes from rank 0's checkpoint and ends where the uninterrupted run of
    # the study ended: the same weights, so the same losses to the last digit.
    again = subprocess.run(cmd, cwd=two_ranks, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Resuming from step_000000012.ckpt" in again.stdout + again.stderr
    resumed = pd.read_csv(model / f"seed{SEED}/loss.csv")
    assert resumed.equals(pd.read_csv(two_ranks / RUN / "loss.csv"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_no_worker_outlives_a_killed_launcher(two_ranks, tmp_path, sig):
    # Issue 18.2: a notebook or papermill killed with SIGKILL used to leave msrun's
    # scheduler and workers running (they sit in sessions of their own), holding the port.
    cmd = [
        sys.executable, "-m", "deepfm_lib.distributed", "launch", "--model", "deepfm",
        "--target", "CPU", "--data-dir", "data/processed", "--model-dir", str(tmp_path / "m"),
        "--plots-dir", str(tmp_path),
    ]  # fmt: skip
    job = subprocess.Popen(cmd, cwd=two_ranks, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launcher = psutil.Process(job.pid)
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 120
    try:
        while _rank_pid(seen, 1) is None or _rank_pid(seen, 0) is None:
            assert job.poll() is None, "the job ended before its workers started"
            assert time.monotonic() < deadline, "no workers within 120 s"
            with contextlib.suppress(psutil.Error):
                seen.update({p.pid: p for p in launcher.children(recursive=True)})
            time.sleep(0.05)
        os.kill(job.pid, sig)
        job.wait(timeout=30)
        gone_by = time.monotonic() + 10
        while any(map(_alive, seen.values())) and time.monotonic() < gone_by:
            time.sleep(0.1)
    finally:
        if job.poll() is None:
            job.kill()
    left = [p for p in seen.values() if _alive(p)]
    for p in left:  # do not leave them to the next test either
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert len(seen) >= 4, seen  # msrun, its scheduler, two workers (and the reaper)
    assert not left, f"processes outlived the launcher by 10 s: {[p.pid for p in left]}"
