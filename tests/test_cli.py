"""The model zoo's command line: entry points, log formats, bad values, zoo checkpoints.

Every entry point runs as a subprocess on tiny preprocessed data in a temporary folder,
the way a user runs it. The regular expressions below are the zoo's line formats as its
src/callback.py and eval.py write them, written out here independently of deepfm_lib.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
TINY = [
    "--set", "preset=small",
    "--set", "model.emb_dim=4",
    "--set", "model.deep_layers=[16,8]",
    "--set", "train.epochs=1",
    "--set", "train.batch_size=500",
]  # fmt: skip

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
LOSS_LINE = re.compile(rf"^{STAMP} epoch: (\d+) step: (\d+), loss is ({NUM})$")
EVAL_LINE = re.compile(
    rf"^{STAMP} EvalCallBack metricdict_values\(\[({NUM})\]\); eval_time(-?\d+)s$"
)
RESULT_LINE = re.compile(rf"^\{{'result': \{{'AUC': ({NUM}), 'eval_time': ({NUM})\}}\}}$")


def run(cmd: list[str], cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("DEEPFM_TRACEBACK", None)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def py(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, "--params", str(PARAMS), *args]


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, and the last stderr line is the only error line."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error:" in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from deepfm_lib.config import PreprocessParams
    from deepfm_lib.data import synthetic
    from deepfm_lib.data.preprocess import preprocess

    root = tmp_path_factory.mktemp("cli_data")
    synthetic.generate(root / "raw", rows=3000, seed=7, scale=0.002)
    # 100-row records give the zoo's block split enough blocks for a test split of 3000 rows.
    cfg = PreprocessParams(threshold=5, rows_per_record=100)
    preprocess(root / "raw" / "train.txt", root / "data", cfg, progress=False, workers=1)
    return root / "data"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """One zoo-style training run: (work folder, completed process)."""
    work = tmp_path_factory.mktemp("cli_train")
    proc = run(
        py(
            "deepfm_lib.train",
            f"--dataset_path={data_dir}",
            "--ckpt_path=ck",
            "--eval_file_name=logs/auc.log",
            "--loss_file_name=logs/loss.log",
            "--do_eval=True",
            "--device_target=CPU",
            *TINY,
        ),
        work,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


@pytest.fixture(scope="module")
def our_eval(trained, data_dir):
    """python -m deepfm_lib.eval on our own model.ckpt: (AUC printed, work folder)."""
    work, _ = trained
    proc = run(
        py(
            "deepfm_lib.eval",
            f"--dataset_path={data_dir}",
            "--checkpoint_path=ck/model.ckpt",
            "--device_target=CPU",
            "--eval_file_name=logs/eval_auc.log",
            "--metrics_path=metrics.json",
            *TINY,
        ),
        work,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = RESULT_LINE.match(proc.stdout.strip().splitlines()[-1])
    assert m, proc.stdout
    return float(m.group(1)), work


def zoo_checkpoint(src: Path, dst: Path, *, transpose=False, prefix="", extra=None) -> Path:
    """Our weights saved the way the zoo's TrainStepWrap(NetWithLossClass(...)) names them.

    The zoo's tables are Parameters named W_l2 / V_l2; Adam adds moment1./moment2. copies,
    beta1_power, beta2_power, learning_rate and global_step. ``transpose`` stores the dense
    weights (out, in) as an nn.Dense-based variant would.
    """
    import mindspore as ms

    ours = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(src)).items()}
    rename = {"fm_w": "W_l2", "embedding_table": "V_l2"}
    weights = {}
    for name, value in ours.items():
        if transpose and name.endswith(".weight"):
            value = value.T.copy()
        weights[prefix + rename.get(name, name)] = value
    weights.update(extra or {})
    entries = [{"name": n, "data": ms.Tensor(v)} for n, v in weights.items()]
    for moment in ("moment1", "moment2"):
        entries += [
            {"name": f"{moment}.{n}", "data": ms.Tensor(np.zeros_like(v))}
            for n, v in weights.items()
        ]
    entries += [
        {"name": "beta1_power", "data": ms.Tensor(np.float32(0.9**5))},
        {"name": "beta2_power", "data": ms.Tensor(np.float32(0.999**5))},
        {"name": "learning_rate", "data": ms.Tensor(np.float32(5e-4))},
        {"name": "global_step", "data": ms.Tensor(np.array([5], np.int32))},
    ]
    ms.save_checkpoint(entries, str(dst))
    return dst


# ------------------------------------------------------------------ training


def test_train_writes_the_zoo_logs_from_our_csv(trained):
    work, proc = trained
    loss_rows = read_csv(work / "ck" / "loss.csv")
    eval_rows = read_csv(work / "ck" / "eval.csv")
    assert len(loss_rows) == 5 and len(eval_rows) == 1  # 2500 train rows / 500, one epoch

    lines = (work / "logs" / "loss.log").read_text().splitlines()
    parsed = [LOSS_LINE.match(ln) for ln in lines]
    assert all(parsed), lines
    assert [(int(m[1]), int(m[2])) for m in parsed] == [(1, s) for s in range(1, 6)]
    assert [float(m[3]) for m in parsed] == [float(r["loss"]) for r in loss_rows]

    evals = (work / "logs" / "auc.log").read_text().splitlines()
    m = [EVAL_LINE.match(ln) for ln in evals]
    assert len(m) == 1 and m[0], evals
    assert float(m[0][1]) == float(eval_rows[0]["auc"])
    assert int(m[0][2]) >= 0  # the evaluation was timed (-1 would mean "not measured")

    # The zoo's LossCallBack also prints each step, without the time, to stdout.
    printed = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch:")]
    assert printed == [ln.split(" ", 2)[2] for ln in lines]


def test_train_leaves_our_outputs_and_a_zoo_named_checkpoint(trained):
    work, _ = trained
    ck = work / "ck"
    for name in ("model.ckpt", "best.ckpt", "loss.csv", "eval.csv", "train_summary.json"):
        assert (ck / name).is_file(), name
    zoo_named = ck / "deepfm-1_5.ckpt"  # <prefix>-<epoch>_<steps per epoch>.ckpt
    assert zoo_named.read_bytes() == (ck / "model.ckpt").read_bytes()


def test_resumed_run_appends_the_new_steps_and_do_eval_false_does_not_evaluate(
    trained, data_dir, tmp_path
):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(trained[0], work)
    auc_before = (work / "logs" / "auc.log").read_text()
    proc = run(
        py(
            "deepfm_lib.train",
            "--dataset_path",
            str(data_dir),
            "--ckpt_path",
            "ck",
            "--eval_file_name=logs/auc.log",
            "--loss_file_name=logs/loss.log",
            "--do_eval",
            "False",
            *TINY,
            "--set",
            "train.epochs=2",  # the last --set wins: one more epoch, resumed from epoch 1
        ),
        work,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (work / "logs" / "loss.log").read_text().splitlines()
    steps = [(int(m[1]), int(m[2])) for m in map(LOSS_LINE.match, lines)]
    assert steps == [(1, s) for s in range(1, 6)] + [(2, s) for s in range(1, 6)]
    assert (work / "logs" / "auc.log").read_text() == auc_before
    assert (work / "ck" / "deepfm-2_5.ckpt").is_file()
    # As the zoo's flag: epoch 2 was not evaluated at all, not only left out of auc.log.
    assert [r["epoch"] for r in read_csv(work / "ck" / "eval.csv")] == ["1"]
    assert "epoch 2: eval AUC" not in proc.stderr


def test_zoo_logs_hold_every_step_once_across_kills_and_restarts(tmp_path):
    from deepfm_lib.zoo.logs import sync

    ck, loss_log, auc_log = tmp_path / "ck", tmp_path / "loss.log", tmp_path / "auc.log"
    ck.mkdir()

    def history(steps: int, per_epoch: int = 2) -> None:
        """loss.csv/eval.csv as train() leaves them after ``steps`` global steps."""
        rows = [(s, (s - 1) // per_epoch + 1, 0.7 - s / 100) for s in range(1, steps + 1)]
        text = "step,epoch,loss\n" + "".join(f"{s},{e},{v!r}\n" for s, e, v in rows)
        (ck / "loss.csv").write_text(text)
        epochs = steps // per_epoch
        evals = "".join(f"{e},{0.6 + e / 100!r},0.5\n" for e in range(1, epochs + 1))
        (ck / "eval.csv").write_text("epoch,auc,logloss\n" + evals)

    def logged() -> tuple[list[tuple[int, int]], list[float]]:
        steps = [
            (int(m[1]), int(m[2])) for m in map(LOSS_LINE.match, loss_log.read_text().splitlines())
        ]
        aucs = [float(m[1]) for m in map(EVAL_LINE.match, auc_log.read_text().splitlines())]
        return steps, aucs

    history(4)
    sync(ck, loss_log, auc_log, None)  # fresh run: 2 epochs of 2 steps
    assert logged() == ([(1, 1), (1, 2), (2, 1), (2, 2)], [0.61, 0.62])
    history(6)
    sync(ck, loss_log, auc_log, 4)  # resumed after epoch 2: only epoch 3 is new
    assert logged()[0][4:] == [(3, 1), (3, 2)] and logged()[1][2:] == [0.63]
    history(7)  # a run killed at step 7 (mid epoch 4) never wrote its lines ...
    history(10)
    sync(ck, loss_log, auc_log, 7)  # ... the run resumed from its checkpoint writes them
    steps, aucs = logged()
    assert steps[6:] == [(4, 1), (4, 2), (5, 1), (5, 2)] and aucs[3:] == [0.64, 0.65]
    sync(ck, loss_log, auc_log, 10)  # a finished run rerun: nothing new
    assert len(logged()[0]) == 10
    history(2)
    sync(ck, loss_log, None, None)  # new settings, fresh start; --do_eval False
    steps, aucs = logged()
    assert steps[10:] == [(1, 1), (1, 2)] and len(aucs) == 5


def test_zoo_auc_lines_carry_each_epoch_eval_time(tmp_path):
    from deepfm_lib.zoo.logs import NOT_MEASURED, eval_lines

    (tmp_path / "eval.csv").write_text("epoch,auc,logloss\n1,0.61,0.5\n2,0.62,0.5\n")
    (tmp_path / "times.csv").write_text("epoch,eval_s\n1,12.7\n")  # epoch 2: not recorded
    lines = eval_lines(
        tmp_path / "eval.csv", stamp="2026-01-01 00:00:00", times_csv=tmp_path / "times.csv"
    )
    assert [int(EVAL_LINE.match(ln)[2]) for ln in lines] == [12, NOT_MEASURED]


# ------------------------------------------------------------------ evaluation


def test_eval_prints_and_appends_the_zoo_result(our_eval, trained):
    auc, work = our_eval
    last_epoch_auc = float(read_csv(work / "ck" / "eval.csv")[-1]["auc"])
    assert auc == pytest.approx(last_epoch_auc, abs=1e-6)  # model.ckpt = last epoch's weights
    logged = (work / "logs" / "eval_auc.log").read_text().splitlines()
    assert len(logged) == 1 and RESULT_LINE.match(logged[0])
    import json

    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["rows"] == 500 and metrics["auc"] == auc


def test_zoo_checkpoint_scores_the_same_auc_as_our_names(our_eval, data_dir, tmp_path):
    auc, work = our_eval
    ckpt = zoo_checkpoint(work / "ck" / "model.ckpt", tmp_path / "deepfm-1_5.ckpt")
    # Without --set model.*: the network comes from the checkpoint's shapes.
    proc = run(
        py(
            "deepfm_lib.eval",
            f"--dataset_path={data_dir}",
            f"--checkpoint_path={ckpt}",
            "--device_target=CPU",
            "--infer_shapes=True",
            "--eval_file_name=auc.log",
        ),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = RESULT_LINE.match(proc.stdout.strip().splitlines()[-1])
    assert m and float(m.group(1)) == auc


def test_other_layouts_and_prefixes_map_onto_the_same_network(our_eval, data_dir, tmp_path):
    from deepfm_lib.data.dataset import iter_batches
    from deepfm_lib.engine.device import use_device
    from deepfm_lib.engine.inference import binary_metrics, predict
    from deepfm_lib.zoo.checkpoint import load_network

    auc, work = our_eval
    use_device("CPU")
    ckpt = zoo_checkpoint(
        work / "ck" / "model.ckpt",
        tmp_path / "dense.ckpt",
        transpose=True,  # (out, in), as nn.Dense stores it
        prefix="network.network.",
    )
    net = load_network(ckpt, field_size=39)
    assert net.config.deep_layers == (16, 8) and net.config.emb_dim == 4
    labels, probs = predict(net, iter_batches(data_dir, "test", 1000, shuffle=False, seed=0))
    assert binary_metrics(labels, probs)["auc"] == pytest.approx(auc, abs=1e-12)


def test_mismatched_checkpoints_are_refused(our_eval, data_dir, tmp_path):
    from deepfm_lib.config import ModelConfig
    from deepfm_lib.zoo.checkpoint import CheckpointMismatchError, load_network

    _, work = our_eval
    src = work / "ck" / "model.ckpt"
    deeper = zoo_checkpoint(
        src,
        tmp_path / "deeper.ckpt",
        extra={
            "dense_layer_4.weight": np.zeros((1, 1), np.float32),
            "dense_layer_4.bias": np.zeros(1, np.float32),
        },
    )
    want = ModelConfig(vocab_size=1, field_size=39, emb_dim=4, deep_layers=(16, 8))
    with pytest.raises(CheckpointMismatchError, match="dense_layer_4"):
        load_network(deeper, want)
    with pytest.raises(CheckpointMismatchError, match="vocab"):
        load_network(zoo_checkpoint(src, tmp_path / "ok.ckpt"), want)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="not a readable"):
        load_network(tmp_path / "junk.ckpt")

    # The command: the default network (params' small preset) does not fit this checkpoint.
    proc = run(
        py(
            "deepfm_lib.eval",
            f"--dataset_path={data_dir}",
            f"--checkpoint_path={tmp_path / 'ok.ckpt'}",
            "--device_target=CPU",
        ),
        tmp_path,
    )
    assert_one_line_error(proc, "does not match the network", "emb_dim 16", "emb_dim 4")


# ------------------------------------------------------------------ help and bad values


@pytest.mark.parametrize(
    ("module", "flags"),
    [
        (
            "deepfm_lib.train",
            ["--dataset_path", "--ckpt_path", "--eval_file_name", "--loss_file_name",
             "--do_eval", "--device_target", "--params", "--set", "--target", "--workers",
             "--model"],
        ),
        (
            "deepfm_lib.eval",
            ["--dataset_path", "--checkpoint_path", "--device_target", "--infer_shapes",
             "--eval_file_name", "--metrics_path", "--params", "--set", "--model"],
        ),
    ],
)  # fmt: skip
def test_help_describes_every_flag(module, flags, tmp_path):
    proc = run([sys.executable, "-m", module, "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    # argparse lists each option as "  --flag VALUE  text", the text maybe on indented lines.
    entries: dict[str, str] = {}
    current = None
    for line in proc.stdout.split("options:", 1)[1].splitlines():
        m = re.match(r"^  (--?\w[\w-]*)(?:[ =]\S+)?(?:, (--\w+)(?:[ =]\S+)?)?\s*(.*)$", line)
        if m:
            current = m.group(2) or m.group(1)
            entries[current] = m.group(3)
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
    for flag in flags:
        assert len(entries.get(flag, "").split()) >= 4, (flag, entries.get(flag))
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--device_target=TPU"], ["--device_target", "TPU"]),
        (["--dataset_path=raw_text_folder"], ["--dataset_path", "no stats.json"]),
        (["--set", "model.emb_dimm=4"], ["unknown key", "model.emb_dimm"]),
        (["--set", "train.epochs"], ["--set", "KEY=VALUE"]),
        (["--do_eval", "maybe"], ["--do_eval", "True or False"]),
    ],
    ids=["device", "dataset", "set-key", "set-syntax", "do_eval"],
)
def test_bad_values_end_with_one_line(args, needles, data_dir, tmp_path):
    (tmp_path / "raw_text_folder").mkdir()
    base = {"--dataset_path": str(data_dir), "--ckpt_path": "ck"}
    given = {a.split("=")[0] for a in args}
    cmd = [f"{k}={v}" for k, v in base.items() if k not in given] + args
    proc = run(py("deepfm_lib.train", *cmd), tmp_path)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "ck").exists()  # nothing started


def test_unavailable_device_or_missing_checkpoint_end_with_one_line(data_dir, tmp_path):
    from deepfm_lib.engine.device import available_targets

    missing = [t for t in ("GPU", "Ascend") if t not in available_targets()]
    if missing:
        args = [f"--dataset_path={data_dir}", f"--device_target={missing[0]}", "--ckpt_path=ck"]
        proc = run(py("deepfm_lib.train", *args), tmp_path)
        assert_one_line_error(proc, missing[0], "offers only")
    proc = run(
        py("deepfm_lib.eval", f"--dataset_path={data_dir}", "--checkpoint_path=none.ckpt"),
        tmp_path,
    )
    assert_one_line_error(proc, "--checkpoint_path", "no such file")


# ------------------------------------------------------------------ scripts


@pytest.mark.parametrize(
    "script", ["run_standalone_train.sh", "run_distribute_train.sh", "run_eval.sh"]
)
def test_scripts_print_usage_on_wrong_arguments(script, tmp_path):
    path = REPO / "scripts" / script
    assert os.access(path, os.X_OK)
    assert "set -euo pipefail" in path.read_text()
    proc = run([str(path)], tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.startswith(f"usage: bash scripts/{script} ")


def test_distribute_script_sets_the_workers_of_the_training_stage(data_dir, tmp_path):
    # 3 workers cannot share a global batch of 500: refused before msrun starts.
    script = REPO / "scripts" / "run_distribute_train.sh"
    proc = run([str(script), "3", str(data_dir), *TINY], tmp_path)
    assert proc.returncode != 0
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("deepfm_lib.train: error:") and "= 3 ranks" in last, proc.stdout
    assert "Traceback" not in proc.stdout


def test_scripts_train_and_evaluate(data_dir, tmp_path):
    proc = run(
        [str(REPO / "scripts" / "run_standalone_train.sh"), "0", str(data_dir), *TINY], tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert all(map(LOSS_LINE.match, (tmp_path / "loss.log").read_text().splitlines()))
    assert EVAL_LINE.match((tmp_path / "auc.log").read_text().strip())
    assert "epoch: 1 step: 5, loss is" in (tmp_path / "ms_log" / "output.log").read_text()
    proc = run(
        [str(REPO / "scripts" / "run_eval.sh"), "0", "CPU", str(data_dir),
         "checkpoint/deepfm-1_5.ckpt", "--infer_shapes", "True"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    results = (tmp_path / "auc.log").read_text().strip().splitlines()
    assert RESULT_LINE.match(results[-1])


def test_any_registered_model_trains_and_evaluates_with_the_zoo_flags(data_dir, tmp_path):
    common = [f"--dataset_path={data_dir}", "--device_target=CPU", "--model=fm", *TINY]
    train = run(py("deepfm_lib.train", "--ckpt_path=ck", "--do_eval=False", *common), tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    summary = json.loads((tmp_path / "ck" / "train_summary.json").read_text())
    assert summary["model"] == "fm"
    evaluated = run(
        py("deepfm_lib.eval", "--checkpoint_path=ck/model.ckpt", "--metrics_path=m.json", *common),
        tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert RESULT_LINE.match(evaluated.stdout.strip().splitlines()[-1]), evaluated.stdout
    assert json.loads((tmp_path / "m.json").read_text())["rows"] > 0
    wrong = run(py("deepfm_lib.train", "--ckpt_path=x", "--model=xgboost", *common[:2]), tmp_path)
    assert_one_line_error(wrong, "--model", "xgboost")
