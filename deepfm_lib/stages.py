"""The pipeline's stages as plain functions: params in, files out.

Each notebook calls one of these and then shows what it produced, so everything a stage
does is importable and tested, and the notebooks stay thin. Paths are arguments: the DVC
pipeline passes the real output folders, a person in JupyterLab gets scratch folders.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfm_lib.io import atomic_path, read_json, write_json
from deepfm_lib.params import Params, criteo_file

if TYPE_CHECKING:
    from deepfm_lib.distributed import Collective

log = logging.getLogger(__name__)

RAW_FILE = "train.txt"
TEACHER_FILE = "teacher_logits.npy"
SOURCE_FILE = "source.json"


def make_data(params: Params, out_dir: str | Path) -> dict[str, Any]:
    """Generate the synthetic Criteo-format text, or describe the user's Criteo file."""
    from deepfm_lib.data import synthetic

    out_dir = Path(out_dir)
    if params.data.source == "synthetic":
        syn = params.data.synthetic
        return synthetic.generate(out_dir, rows=syn.rows, seed=syn.seed, scale=syn.scale)
    # Real Criteo: 11 GB is not copied; the preprocess stage reads it where it lies.
    src = criteo_file(params.data.criteo_path).resolve()
    info = {"source": "criteo", "path": str(src), "bytes": src.stat().st_size}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / SOURCE_FILE, info)
    return info


def raw_input(params: Params, raw_dir: str | Path) -> tuple[Path, Path | None]:
    """The raw text to preprocess and, for synthetic data, the teacher's logits."""
    raw_dir = Path(raw_dir)
    if params.data.source == "synthetic":
        teacher = raw_dir / TEACHER_FILE
        return raw_dir / RAW_FILE, teacher if teacher.exists() else None
    return criteo_file(params.data.criteo_path), None


def preprocess(
    params: Params, raw_dir: str | Path, out_dir: str | Path, metrics_path: str | Path
) -> dict[str, Any]:
    """Vocabulary, dense scaling and split into MindRecord shards; a small metrics summary."""
    from deepfm_lib.data.preprocess import PreprocessConfig
    from deepfm_lib.data.preprocess import preprocess as run

    p = params.preprocess
    cfg = PreprocessConfig(
        protocol=p.protocol,
        threshold=p.threshold,
        test_fraction=p.test_fraction,
        valid_fraction=p.valid_fraction,
        split_seed=p.split_seed,
        shards=p.shards,
        on_bad_line=params.data.on_bad_line,
    )
    raw, teacher = raw_input(params, raw_dir)
    stats = run(raw, Path(out_dir), cfg, teacher_logits=teacher)
    summary = {
        "protocol": stats["protocol"],
        "rows": {name: s["rows"] for name, s in stats["splits"].items()},
        "positive_rate": {name: s["positive_rate"] for name, s in stats["splits"].items()},
        "vocab_size": stats["vocab_size"],
        "oracle_auc": stats.get("oracle_auc"),
        "bad_lines": sum(stats.get("bad_lines", {}).values()),
    }
    write_json(metrics_path, summary)
    return stats


def model_config(params: Params, target: str, vocab_size: int):
    """The network's settings: vocabulary from the data, precision from the target."""
    from deepfm_lib.model import ModelConfig

    m = params.model_settings()
    return ModelConfig(
        vocab_size=vocab_size,
        emb_dim=m.emb_dim,
        deep_layers=tuple(m.deep_layers),
        dropout=m.dropout,
        init_std=m.init_std,
        l2=m.l2,
        precision=params.target(target).precision,
    )


def train(
    params: Params,
    target: str,
    data_dir: str | Path,
    model_dir: str | Path,
    plots_dir: str | Path,
    *,
    collective: Collective | None = None,
) -> dict[str, Any]:
    """Train one device target; per-step loss and per-epoch AUC land in `plots_dir`.

    A target with workers x nodes > 1 is trained by msrun's workers, each of which calls this
    function with its `collective` (deepfm_lib.distributed); the calling process streams
    their logs and returns rank 0's summary. train.batch_size is the global batch either way.
    """
    from deepfm_lib.device import use_device

    settings = params.target(target)
    device = settings.device
    if collective is None:  # a worker selected its device before joining the job
        use_device(device)  # fails before any data is read if the device is not usable here

    data_dir, model_dir, plots_dir = Path(data_dir), Path(model_dir), Path(plots_dir)
    stats = read_json(data_dir / "stats.json")
    eval_split = stats["eval_split"]
    if collective is None and settings.world_size > 1:
        from deepfm_lib.distributed import train_with_msrun

        train_with_msrun(params, target, data_dir, model_dir, plots_dir)
        if settings.node_rank != 0:  # rank 0, on node 0, wrote the outputs
            return {"target": target, "device": device, "node_rank": settings.node_rank}
    else:
        from deepfm_lib.data.dataset import iter_batches, split_rows
        from deepfm_lib.distributed import equal_steps, steps_per_epoch
        from deepfm_lib.train import TrainConfig
        from deepfm_lib.train import train as run

        t = params.train_settings(target)
        # TrainConfig has TrainParams' fields plus the seed: a new setting needs no edit here.
        cfg = TrainConfig(**t.model_dump(), seed=params.seed)
        ranks, rank = (collective.size, collective.rank) if collective else (1, 0)
        local_bs = t.batch_size // ranks
        # Ranks may own one record more or less; all of them run the longest rank's steps.
        rows = [split_rows(data_dir, "train", ranks, k) for k in range(ranks)]
        steps = steps_per_epoch(rows, local_bs)

        def train_batches(epoch: int):
            batches = iter_batches(
                data_dir,
                "train",
                local_bs,
                shuffle=True,
                seed=params.seed,
                epoch=epoch,
                num_shards=ranks,
                shard_id=rank,
            )
            return batches if collective is None else equal_steps(batches, steps)

        eval_bs = params.evaluate.batch_size
        run(
            model_config(params, target, stats["vocab_size"]),
            cfg,
            train_batches=train_batches,
            eval_batches=lambda: iter_batches(
                data_dir,
                eval_split,
                eval_bs,
                shuffle=False,
                seed=0,
                num_shards=ranks,
                shard_id=rank,
            ),
            out_dir=model_dir,
            # A rerun after a kill resumes; a rerun for new settings or new data starts over.
            data_id=_run_id(data_dir),
            restart_on_mismatch=True,
            progress=collective is None or collective.is_main,
            collective=collective,
        )
        if collective is not None and not collective.is_main:
            return {}
        plots_dir.mkdir(parents=True, exist_ok=True)
        for name in ("loss.csv", "eval.csv"):
            with atomic_path(plots_dir / name) as tmp:
                shutil.copyfile(model_dir / name, tmp)
    summary = read_json(model_dir / "train_summary.json")
    summary.update(target=target, device=device, eval_split=eval_split)
    return summary


def choose_checkpoint(params: Params, model_dir: Path) -> tuple[Path, str]:
    """Which weights to score: the zoo scores its last epoch; `clean` its best on validation."""
    if params.preprocess.protocol == "clean":
        return model_dir / "best.ckpt", "best validation AUC over the epochs (clean protocol)"
    return model_dir / "model.ckpt", "weights after the last epoch (as the zoo does)"


def _run_id(data_dir: Path) -> str:
    """Names the data and the training code: checkpoints of either made otherwise restart.

    DVC reruns the train stage when its data or code changed, and also after a kill;
    only in the last case may the run continue from the checkpoints it finds.
    """
    import deepfm_lib

    digest = hashlib.sha256((Path(data_dir) / "stats.json").read_bytes())
    package = Path(deepfm_lib.__file__).parent
    for name in ("model.py", "train.py", "stages.py", "distributed.py", "data/dataset.py"):
        digest.update((package / name).read_bytes())
    return digest.hexdigest()[:16]


def evaluate(
    params: Params,
    target: str,
    data_dir: str | Path,
    model_dir: str | Path,
    metrics_path: str | Path,
    mindir_path: str | Path | None = None,
) -> dict[str, Any]:
    """Score the whole test split once: global AUC, logloss, calibration, throughput.

    The scored weights are also exported to MindIR at `mindir_path`, for serving.
    """
    from deepfm_lib.device import use_device

    device = params.target(target).device
    use_device(device)

    from deepfm_lib.data.dataset import iter_batches
    from deepfm_lib.evaluate import binary_metrics, export_mindir, load_model, predict

    data_dir, model_dir = Path(data_dir), Path(model_dir)
    stats = read_json(data_dir / "stats.json")
    ckpt, choice = choose_checkpoint(params, model_dir)
    net = load_model(model_config(params, target, stats["vocab_size"]), ckpt)
    batches = iter_batches(data_dir, "test", params.evaluate.batch_size, shuffle=False, seed=0)
    # Throughput is timed after one warm-up batch: compiling the predictor's graph on its
    # first call takes ~1.5 s on CPU, longer than scoring the default 40,000 test rows
    # (which then showed ~20,000 samples/s for a predictor that scores ~150,000). Reading
    # the batches is still timed; the warm-up's predictions are not used.
    first = next(batches, None)
    if first is not None:
        predict(net, [first])
    start = time.perf_counter()
    labels, probs = predict(net, itertools.chain([] if first is None else [first], batches))
    seconds = time.perf_counter() - start
    metrics = binary_metrics(labels, probs)
    train_summary = read_json(model_dir / "train_summary.json")
    metrics.update(
        target=target,
        device=device,
        split="test",
        checkpoint=ckpt.name,
        checkpoint_epoch=_checkpoint_epoch(ckpt, model_dir),
        checkpoint_choice=choice,
        inference_samples_per_s=round(len(labels) / seconds, 1),
        train_samples_per_s=train_summary.get("samples_per_s"),
        train_ms_per_step=train_summary.get("ms_per_step"),
    )
    if mindir_path is not None:
        metrics["mindir"] = export_mindir(net, mindir_path).name
    write_json(metrics_path, metrics)
    return metrics


def _checkpoint_epoch(ckpt: Path, model_dir: Path) -> int:
    """The epoch whose weights `ckpt` holds (best.ckpt: the first epoch with the top AUC)."""
    import pandas as pd

    evals = pd.read_csv(model_dir / "eval.csv")
    if ckpt.name == "best.ckpt":
        return int(evals.loc[evals["auc"].idxmax(), "epoch"])
    return int(evals["epoch"].max())


def preview_raw(params: Params, raw_dir: str | Path, rows: int = 5):
    """The first raw rows with Criteo's column names, read as text (nothing parsed away)."""
    import pandas as pd

    from deepfm_lib.data.criteo import N_CAT, N_DENSE

    path, _ = raw_input(params, raw_dir)
    names = ["label"] + [f"I{i}" for i in range(1, N_DENSE + 1)]
    names += [f"C{i}" for i in range(1, N_CAT + 1)]
    return pd.read_csv(
        path, sep="\t", header=None, names=names, nrows=rows, dtype=str, keep_default_na=False
    )
