"""The pipeline's stages as plain functions: params in, files out.

Each notebook calls one of these and then shows what it produced, so everything a stage
does is importable and tested, and the notebooks stay thin. Paths are arguments: the DVC
pipeline passes the real output folders, a person in JupyterLab gets scratch folders.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfm_lib.config import Params, Run, criteo_file
from deepfm_lib.io import atomic_path, read_json, write_json
from deepfm_lib.machine import cpu_model

if TYPE_CHECKING:
    from deepfm_lib.engine.parallel import Collective

log = logging.getLogger(__name__)

RAW_FILE = "train.txt"
SOURCE_FILE = "source.json"


def make_data(params: Params, out_dir: str | Path) -> dict[str, Any]:
    """Generate the synthetic Criteo-format text, or describe the user's Criteo file or the
    MovieLens source (whose rows are never copied: the licence forbids redistributing them)."""
    from deepfm_lib.data import synthetic

    out_dir = Path(out_dir)
    if params.data.source == "movielens":
        from deepfm_lib.data import movielens

        src = movielens.locate(params.data.movielens).resolve()
        info = {"source": "movielens", "path": str(src), "citation": movielens.CITATION}
        if src.is_file():
            info["sha256"] = movielens.WHEEL_SHA256  # locate checked it
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / SOURCE_FILE, info)
        return info
    if params.data.source == "synthetic":
        syn = params.data.synthetic
        info = synthetic.generate(
            out_dir, rows=syn.rows, seed=syn.seed, scale=syn.scale, teacher=syn.shape()
        )
        return {**info, "teacher_name": syn.teacher}
    # Real Criteo: 11 GB is not copied; the preprocess stage reads it where it lies.
    src = criteo_file(params.data.criteo_path).resolve()
    info = {"source": "criteo", "path": str(src), "bytes": src.stat().st_size}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / SOURCE_FILE, info)
    return info


def raw_input(params: Params, raw_dir: str | Path) -> tuple[Path, Path | None]:
    """The raw text to preprocess and, for synthetic data, the teacher's logits."""
    from deepfm_lib.data.oracle import LOGITS_FILE

    raw_dir = Path(raw_dir)
    if params.data.source == "synthetic":
        teacher = raw_dir / LOGITS_FILE
        return raw_dir / RAW_FILE, teacher if teacher.exists() else None
    return criteo_file(params.data.criteo_path), None


def preprocess(
    params: Params, raw_dir: str | Path, out_dir: str | Path, metrics_path: str | Path
) -> dict[str, Any]:
    """Vocabulary, dense scaling and split into MindRecord shards; a small metrics summary."""
    from deepfm_lib.data.preprocess import preprocess as write_shards

    if params.data.source == "movielens":
        from deepfm_lib.data import movielens

        source = Path(read_json(Path(raw_dir) / SOURCE_FILE)["path"])
        stats = movielens.preprocess(
            source, Path(out_dir), params.data.movielens, params.preprocess
        )
    else:
        from deepfm_lib.data.oracle import TeacherScore

        raw, teacher = raw_input(params, raw_dir)
        stats = write_shards(
            raw,
            Path(out_dir),
            params.preprocess,
            score_test=None if teacher is None else TeacherScore(teacher),
            on_bad_line=params.data.on_bad_line,
        )
    summary = {
        "protocol": stats["protocol"],
        "rows": {name: s["rows"] for name, s in stats["splits"].items()},
        "positive_rate": {name: s["positive_rate"] for name, s in stats["splits"].items()},
        "data": stats["data"]["name"],
        "vocab_size": stats["vocab_size"],
        "fields": stats["data"]["width"],
        "oracle_auc": stats.get("oracle_auc"),
        "oracle_parts": stats.get("oracle_parts"),
        "bad_lines": sum(stats.get("bad_lines", {}).values()),
    }
    write_json(metrics_path, summary)
    return stats


# What a training run's weights depend on besides settings and data: the code the train
# stage lists as deps in dvc.yaml (a test keeps the two lists equal). Checkpoints of a run
# made with other code restart instead of resuming.
TRAIN_CODE = (
    "deepfm_lib/config.py",
    "deepfm_lib/data/dataset.py",
    "deepfm_lib/data/schema.py",
    "deepfm_lib/engine",
    "deepfm_lib/models",
    "deepfm_lib/pipeline/stages.py",
)


def run_name(model: str, target: str) -> str:
    """The stage key and folder name of one model on one target: ``deepfm-CPU``."""
    return f"{model}-{target}"


def seed_dir(model_dir: str | Path, seed: int) -> Path:
    """Where one seed's run of a model lives (checkpoints, model.ckpt, logs)."""
    return Path(model_dir) / f"seed{seed}"


def train(
    params: Params,
    model: str,
    target: str,
    data_dir: str | Path,
    model_dir: str | Path,
    plots_dir: str | Path,
) -> dict[str, Any]:
    """Train ``model`` on one device target once per seed (train.seeds), one after another.

    Seeds run in this one process: MindSpore's start-up is paid once per model, not per
    seed. Each seed's run lives in ``model_dir/seed<seed>/`` and resumes from its own
    checkpoints after a kill; its per-step loss and per-epoch AUC land in
    ``plots_dir/loss/seed<seed>.csv`` and ``plots_dir/eval/seed<seed>.csv``. Runs of seeds
    no longer listed are removed (nothing stale). A target with workers x nodes > 1 runs
    each seed as one msrun job (deepfm_lib.engine.parallel).
    """
    from deepfm_lib.engine.device import use_device

    settings = params.target(target)
    use_device(settings.device)  # fails before any data is read if the device is unusable
    data_dir, model_dir, plots_dir = Path(data_dir), Path(model_dir), Path(plots_dir)
    seeds = params.seeds(target)
    model_dir.mkdir(parents=True, exist_ok=True)
    for old in model_dir.glob("seed*"):
        if old.is_dir() and old.name not in {f"seed{s}" for s in seeds}:
            log.info("removing %s: its seed is no longer in train.seeds", old)
            shutil.rmtree(old)
    summaries = []
    for seed in seeds:
        run = Run(params, model, target, seed, data_dir, seed_dir(model_dir, seed))
        log.info("%s seed %d -> %s", run_name(model, target), seed, run.run_dir)
        summaries.append(train_seed(run))
    if settings.node_rank != 0:
        return {"model": model, "target": target, "node_rank": settings.node_rank}
    _publish_curves(model_dir, plots_dir, seeds)
    return {
        "model": model,
        "target": target,
        "device": settings.device,
        "seeds": seeds,
        "runs": summaries,
    }


def train_seed(run: Run, *, evaluate: bool = True) -> dict[str, Any]:
    """One seed's run in ``run.run_dir``: in this process, or as an msrun job for > 1 rank.

    ``evaluate=False`` skips the per-epoch evaluation (the zoo's ``--do_eval False``): no
    eval.csv rows and no best.ckpt. Returns its train_summary.json (``{"node_rank": k}``
    on a node other than 0).
    """
    if run.cluster.world_size > 1:
        from deepfm_lib.engine.parallel import train_with_msrun

        train_with_msrun(run, evaluate=evaluate)
        if run.cluster.node_rank != 0:  # rank 0, on node 0, writes the outputs
            return {"node_rank": run.cluster.node_rank}
    else:
        train_run(run, evaluate=evaluate)
    return read_json(run.run_dir / "train_summary.json")


def _publish_curves(model_dir: Path, plots_dir: Path, seeds: list[int]) -> None:
    """Copy each seed's loss.csv / eval.csv into the DVC plots folders, atomically."""
    for kind in ("loss", "eval"):
        folder = plots_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.csv"):
            if stale.stem not in {f"seed{s}" for s in seeds}:
                stale.unlink()
        for seed in seeds:
            with atomic_path(folder / f"seed{seed}.csv") as tmp:
                shutil.copyfile(seed_dir(model_dir, seed) / f"{kind}.csv", tmp)


def train_run(run: Run, *, collective: Collective | None = None, evaluate: bool = True) -> None:
    """One training run (one model, target and seed) in this process, or as one rank.

    msrun's workers call this with their ``collective``; train.batch_size is the global
    batch either way.
    """
    from deepfm_lib.data.dataset import iter_batches, split_rows
    from deepfm_lib.engine.parallel import equal_steps, steps_per_epoch
    from deepfm_lib.engine.trainer import train as train_loop

    data_dir = run.data_dir
    stats = read_json(data_dir / "stats.json")
    cfg = run.train_config()
    ranks, rank = (collective.size, collective.rank) if collective else (1, 0)
    local_bs = cfg.batch_size // ranks
    width = stats["data"]["width"]
    # Ranks may own one record more or less; all of them run the longest rank's steps.
    steps = steps_per_epoch(
        [split_rows(data_dir, "train", ranks, k) for k in range(ranks)], local_bs
    )

    def train_batches(epoch: int):
        batches = iter_batches(
            data_dir,
            "train",
            local_bs,
            shuffle=True,
            seed=run.seed,
            epoch=epoch,
            num_shards=ranks,
            shard_id=rank,
        )
        return batches if collective is None else equal_steps(batches, steps, width)

    eval_bs = run.params.evaluate.batch_size
    train_loop(
        run.network_config(stats["vocab_size"], width),
        cfg,
        train_batches=train_batches,
        eval_batches=(
            lambda: iter_batches(
                data_dir,
                stats["eval_split"],
                eval_bs,
                shuffle=False,
                seed=0,
                num_shards=ranks,
                shard_id=rank,
            )
        )
        if evaluate
        else None,
        out_dir=run.run_dir,
        # A rerun after a kill resumes; a rerun for new settings, data or code starts over.
        data_id=_run_id(data_dir),
        restart_on_mismatch=True,
        progress=collective is None or collective.is_main,
        collective=collective,
    )


def choose_checkpoint(params: Params, run_dir: Path) -> tuple[Path, str]:
    """Which weights to score: the zoo scores its last epoch; `clean` its best on validation."""
    if params.preprocess.protocol == "clean":
        return run_dir / "best.ckpt", "best validation AUC over the epochs (clean protocol)"
    return run_dir / "model.ckpt", "weights after the last epoch (as the zoo does)"


def _code_files(root: Path) -> list[Path]:
    files = []
    for entry in TRAIN_CODE:
        path = root / entry
        files += sorted(path.rglob("*")) if path.is_dir() else [path]
    return [f for f in files if f.is_file() and f.suffix in {".py", ".c", ".h"}]


def _run_id(data_dir: Path) -> str:
    """Names the data and the training code: checkpoints of either made otherwise restart.

    DVC reruns the train stage when its data or code changed, and also after a kill;
    only in the last case may the run continue from the checkpoints it finds.
    """
    import deepfm_lib

    digest = hashlib.sha256((Path(data_dir) / "stats.json").read_bytes())
    root = Path(deepfm_lib.__file__).parent.parent
    for path in _code_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def evaluate(
    params: Params,
    model: str,
    target: str,
    data_dir: str | Path,
    model_dir: str | Path,
    metrics_path: str | Path,
    predictions_path: str | Path,
    mindir_path: str | Path | None = None,
) -> dict[str, Any]:
    """Score the whole test split once per seed: global AUC, logloss, calibration, speed.

    Writes the metrics (the mean and SD over seeds, and every seed's figures) for DVC, and
    every seed's test predictions (``predictions_path``, .npz: labels, one column of
    probabilities per seed) for the report's paired tests. The first seed's weights are
    also exported to MindIR at ``mindir_path``, for serving.
    """
    from deepfm_lib.engine.device import use_device

    device = params.target(target).device
    use_device(device)

    import numpy as np

    from deepfm_lib.engine.inference import export_mindir

    data_dir, model_dir = Path(data_dir), Path(model_dir)
    seeds = params.seeds(target)
    runs, probs, labels, mindir = {}, [], None, None
    for seed in seeds:
        run_dir = seed_dir(model_dir, seed)
        net, y, p, metrics = score_run(Run(params, model, target, seed, data_dir, run_dir))
        if labels is not None and not np.array_equal(labels, y):
            raise RuntimeError(f"{run_dir}: the test split's labels changed between seeds")
        labels = y
        probs.append(p)
        summary = read_json(run_dir / "train_summary.json")
        metrics.update(
            seed=seed,
            parameters=summary.get("parameters"),
            epochs=summary.get("epochs"),
            train_seconds=summary.get("wall_s"),
            train_samples_per_s=summary.get("samples_per_s"),
            train_ms_per_step=summary.get("ms_per_step"),
        )
        runs[str(seed)] = metrics
        if mindir_path is not None and mindir is None:
            mindir = export_mindir(net, mindir_path).name
    out = {
        "model": model,
        "target": target,
        "device": device,
        "split": "test",
        "rows": int(labels.size),
        "seeds": seeds,
        "cpu": cpu_model(),  # CPU results are bit-reproducible on one kind of CPU only
        "settings": run_settings(params, model, target),
        **_mean_sd(runs),
        "mindir": mindir,
        "runs": runs,
    }
    with atomic_path(predictions_path, suffix=".npz") as tmp:
        np.savez(
            tmp, labels=labels.astype(np.int8), probs=np.stack(probs, axis=1), seeds=np.array(seeds)
        )
    write_json(metrics_path, out)
    return out


def score_run(run: Run) -> tuple[Any, Any, Any, dict[str, Any]]:
    """One run's weights (the checkpoint its protocol picks) scored on the whole test split.

    Returns the network, the test labels, the probabilities and the metrics, which also say
    which checkpoint was scored and why. The evaluate stage and the learning curve share it.
    """
    from deepfm_lib.data.dataset import iter_batches
    from deepfm_lib.engine.inference import load_model, score

    data_dir, run_dir = run.data_dir, run.run_dir
    stats = read_json(data_dir / "stats.json")
    ckpt, choice = choose_checkpoint(run.params, run_dir)
    net = load_model(run.network_config(stats["vocab_size"], stats["data"]["width"]), ckpt)
    batches = iter_batches(data_dir, "test", run.params.evaluate.batch_size, shuffle=False, seed=0)
    labels, probs, metrics = score(net, batches)
    metrics.update(
        checkpoint=ckpt.name,
        checkpoint_epoch=_checkpoint_epoch(ckpt, run_dir),
        checkpoint_choice=choice,
    )
    return net, labels, probs, metrics


def run_settings(params: Params, model: str, target: str) -> dict[str, Any]:
    """The settings a comparison turns on, as the runs used them: the learning rate, L2,
    the epoch budget and patience, and whatever else ``model``'s tuning grid varies."""
    model_s, train_s = params.model_settings(), params.train_settings(target)
    keys = ["lr", "l2", "epochs", "patience", *params.tune.grid.get(model, {})]
    return {
        k: getattr(model_s if k in type(model_s).model_fields else train_s, k)
        for k in dict.fromkeys(keys)
    }


def _mean_sd(runs: dict[str, dict]) -> dict[str, Any]:
    """Mean and SD (ddof 1) over seeds of the figures DVC compares across experiments."""
    import numpy as np

    out: dict[str, Any] = {}
    for key in ("auc", "logloss", "accuracy", "inference_samples_per_s", "train_samples_per_s"):
        values = [r[key] for r in runs.values() if r.get(key) is not None]
        if not values:
            continue
        out[key] = float(np.mean(values))
        out[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return out


def _checkpoint_epoch(ckpt: Path, run_dir: Path) -> int:
    """The epoch whose weights `ckpt` holds (best.ckpt: the first epoch with the top AUC)."""
    import pandas as pd

    evals = pd.read_csv(run_dir / "eval.csv")
    if ckpt.name == "best.ckpt":
        return int(evals.loc[evals["auc"].idxmax(), "epoch"])
    return int(evals["epoch"].max())


def preview_raw(params: Params, raw_dir: str | Path, rows: int = 5):
    """The first raw rows with Criteo's column names, read as text (nothing parsed away).

    MovieLens shows the columns read from each file instead: its licence forbids
    redistributing the rows, and an executed notebook is a published page."""
    import pandas as pd

    if params.data.source == "movielens":
        from deepfm_lib.data import movielens

        return pd.DataFrame(
            {"file": movielens.FILES[k], "columns read": ", ".join(c)}
            for k, c in movielens.COLUMNS.items()
        )
    from deepfm_lib.data.criteo import COLUMN_NAMES

    path, _ = raw_input(params, raw_dir)
    return pd.read_csv(
        path, sep="\t", header=None, names=list(COLUMN_NAMES), nrows=rows, dtype=str,
        keep_default_na=False,
    )  # fmt: skip
