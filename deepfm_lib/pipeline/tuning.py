"""Per-model tuning on the evaluation split, and the tuned settings the later stages use.

A comparison is fair only when every model had the same chance: each model's settings
(its grid in params.yaml, `tune.grid`) and its epoch (early stopping on the evaluation
AUC) are chosen on validation, and test is scored once, for the chosen checkpoint. The
search runs on one seed (tune.seed; docs/study.md says why) and writes everything it tried
to ``reports/tune/<model>-<target>.json``; the train stage then runs every seed with the
chosen settings, and the search seed's run is the chosen grid point's own run, not a
retrain. Under the zoo protocol the evaluation split is the test split: the JSON and the
report say that test then steered the choice.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from deepfm_lib.config import Params, Run
from deepfm_lib.io import atomic_path, read_json, write_json
from deepfm_lib.pipeline import stages

log = logging.getLogger(__name__)

RUN_JSON = Path("checkpoints") / "run.json"  # a run's fingerprint (engine.trainer)


def point_name(point: dict[str, Any]) -> str:
    """A grid point's folder and key: ``lr=0.002,l2=0`` (``preset`` for an empty grid)."""
    shown = (f"{k}={_token(v)}" for k, v in point.items())
    return ",".join(shown) or "preset"


def _token(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "-".join(map(_token, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _score_epochs(run_dir: Path) -> dict[str, Any]:
    """What a point's run reached: its epochs, the best one and its evaluation figures."""
    import pandas as pd

    evals = pd.read_csv(run_dir / "eval.csv")
    best = evals.loc[evals["auc"].idxmax()]  # the first epoch with the top AUC: best.ckpt
    return {
        "epochs": int(evals["epoch"].max()),
        "best_epoch": int(best["epoch"]),
        "auc": float(best["auc"]),
        "logloss": float(best["logloss"]),
        "curve": [
            {"epoch": int(r.epoch), "auc": float(r.auc), "logloss": float(r.logloss)}
            for r in evals.itertuples()
        ],
    }


def tune(
    params: Params,
    model: str,
    target: str,
    data_dir: str | Path,
    tune_dir: str | Path,
    result_path: str | Path,
    plots_dir: str | Path,
) -> dict[str, Any]:
    """Train every grid point of ``model`` on the search seed; choose on the evaluation AUC.

    Each point's run lives in ``tune_dir/<point>/`` and resumes after a kill like any run;
    its per-epoch evaluation curve lands in ``plots_dir/<point>.csv`` (a DVC plot). Ties go
    to the earlier point of the grid. Points no longer in the grid are removed.
    """
    from deepfm_lib.engine.device import use_device

    use_device(params.target(target).device)  # fails before any data is read if unusable
    data_dir, tune_dir, plots_dir = Path(data_dir), Path(tune_dir), Path(plots_dir)
    split = read_json(data_dir / "stats.json")["eval_split"]
    seed = params.tune_seed(target)
    points = params.grid(model)
    names = [point_name(p) for p in points]
    for folder in (tune_dir, plots_dir):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():
            if stale.name.removesuffix(".csv") not in names:
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    tried: dict[str, dict[str, Any]] = {}
    for point, name in zip(points, names, strict=True):
        log.info("%s: grid point %s (seed %d)", stages.run_name(model, target), name, seed)
        run_dir = tune_dir / name
        stages.train_seed(Run(params.with_settings(point), model, target, seed, data_dir, run_dir))
        tried[name] = {"settings": point, **_score_epochs(run_dir)}
        with atomic_path(plots_dir / f"{name}.csv") as tmp:
            shutil.copyfile(run_dir / "eval.csv", tmp)
    chosen = max(names, key=lambda n: (tried[n]["auc"], -names.index(n)))
    result = {
        "model": model,
        "target": target,
        "seed": seed,
        "split": split,
        "protocol": params.preprocess.protocol,
        "test_steered": split == "test",  # zoo protocol: no validation split exists
        "patience": params.train_settings(target).patience,
        "max_epochs": params.train_settings(target).epochs,
        "chosen": {
            "point": chosen,
            "settings": tried[chosen]["settings"],
            "epoch": tried[chosen]["best_epoch"],
            "auc": tried[chosen]["auc"],
        },
        "points": tried,
    }
    write_json(result_path, result)
    return result


def tuned(params: Params, tune_result: dict[str, Any]) -> Params:
    """``params`` with the search's chosen settings applied."""
    return params.with_settings(tune_result["chosen"]["settings"])


def train(
    params: Params,
    model: str,
    target: str,
    data_dir: str | Path,
    model_dir: str | Path,
    plots_dir: str | Path,
    tune_path: str | Path,
    tune_dir: str | Path,
) -> dict[str, Any]:
    """Every seed of ``model`` with its chosen settings (stages.train after the search).

    The search seed's run is the chosen point's run, copied: it resumes finished and
    trains nothing, so its weights are exactly those the search scored.
    """
    result = read_json(tune_path)
    chosen = Path(tune_dir) / result["chosen"]["point"]
    seed_run = stages.seed_dir(model_dir, result["seed"])
    if result["seed"] in params.seeds(target) and _fingerprint(seed_run) != _fingerprint(chosen):
        log.info("seed %d: the search's run %s", result["seed"], chosen)
        if seed_run.exists():
            shutil.rmtree(seed_run)
        shutil.copytree(chosen, seed_run)
    summary = stages.train(tuned(params, result), model, target, data_dir, model_dir, plots_dir)
    summary["tuned"] = result["chosen"]
    return summary


def _fingerprint(run_dir: Path) -> str | None:
    path = run_dir / RUN_JSON
    return path.read_text() if path.is_file() else None
