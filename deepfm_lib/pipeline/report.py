"""Figures, tables and the offline HTML export of the study's report.

The report notebook only arranges what these functions return, so every number on the
published page comes from the same files `dvc metrics show` and `dvc plots show` read.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from deepfm_lib.config import Params
from deepfm_lib.io import atomic_path, read_json
from deepfm_lib.machine import cpu_model
from deepfm_lib.pipeline import significance

TEMPLATES = Path(__file__).parent / "templates"

# What others published, with what each number means, so ours can be read beside them.
PUBLISHED = pd.DataFrame(
    [
        {
            "source": "MindSpore model zoo DeepFM (Ascend 910)",
            "auc": 0.8058,
            "logloss": 0.45,
            "ms_per_step": 8.16,
            "meaning": "Criteo Kaggle, its own 90/10 split; 'loss' includes its L2 term; "
            "8.16 ms/step at batch 1000",
        },
        {
            "source": "DeepFM paper (Guo et al. 2017)",
            "auc": 0.8007,
            "logloss": 0.4508,
            "ms_per_step": None,
            "meaning": "Criteo Kaggle, random 90/10 split",
        },
        {
            "source": "BARS benchmark, DeepFM on Criteo_x1",
            "auc": 0.8138,
            "logloss": None,
            "ms_per_step": None,
            "meaning": "Criteo_x1 split (7:2:1) with tuned hyper-parameters",
        },
    ]
)


# The DeepFM paper's Table 2 (Criteo, single runs, no error bars) and the BARS benchmark
# (Criteo_x1, DeepFM over 5 seeds), beside the models of this study with the same names.
PAPER_TABLE2 = {"lr": 0.7686, "fm": 0.7892, "dnn": 0.7963, "wide_deep": 0.7981, "deepfm": 0.8007}
PAPER_NOTE = (
    "Guo et al. 2017, Table 2 (Criteo, single runs); its FNN stands in for our dnn "
    "(FNN is an MLP over FM-pre-trained embeddings), its LR&DNN is our wide_deep"
)
BARS = {"dnn": "0.813678 ± 0.000066", "wide_deep": "0.813822", "deepfm": "0.813812 ± 0.00008"}
BARS_NOTE = "BARS benchmark, Criteo_x1 (7:2:1 split, tuned; DeepFM and DNN: mean ± SD of 5 seeds)"
MODEL_LABELS = {"lr": "LR", "fm": "FM", "dnn": "DNN", "wide_deep": "Wide&Deep", "deepfm": "DeepFM"}


@dataclass
class Curves:
    """One model on one target: every seed's per-step loss and per-epoch AUC."""

    name: str  # <model>-<target>
    loss: pd.DataFrame  # step, epoch, loss, seed
    evals: pd.DataFrame  # epoch, auc, logloss, ..., seed


@dataclass
class Result:
    """What one model on one target left behind: metrics over seeds, curves, predictions."""

    model: str
    target: str
    metrics: dict[str, Any]
    curves: Curves
    labels: np.ndarray | None = None
    probs: np.ndarray | None = None  # (rows, seeds)
    seeds: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.model}-{self.target}"

    def seed_aucs(self) -> list[float]:
        return [self.metrics["runs"][str(s)]["auc"] for s in self.metrics["seeds"]]


def _read_seed_csvs(folder: Path) -> pd.DataFrame:
    frames = [
        pd.read_csv(f).assign(seed=int(f.stem.removeprefix("seed")))
        for f in sorted(folder.glob("seed*.csv"))
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_curves(plots_dir: str | Path, name: str) -> Curves:
    """The curves the train stage wrote under ``plots_dir/{loss,eval}/seed<seed>.csv``."""
    plots_dir = Path(plots_dir)
    return Curves(name, _read_seed_csvs(plots_dir / "loss"), _read_seed_csvs(plots_dir / "eval"))


def load_study(
    metrics_dir: str | Path, train_dir: str | Path, predictions_dir: str | Path | None = None
) -> dict[str, Result]:
    """Every model x target that finished evaluation, in the order of params' ``models``."""
    metrics_dir, train_dir = Path(metrics_dir), Path(train_dir)
    results: dict[str, Result] = {}
    for path in sorted(metrics_dir.glob("*-*.json")):
        metrics = read_json(path)
        if "runs" not in metrics:
            continue
        name = path.stem
        result = Result(
            metrics["model"],
            metrics["target"],
            metrics,
            load_curves(train_dir / name, name),
            seeds=list(metrics["seeds"]),
        )
        npz = None if predictions_dir is None else Path(predictions_dir) / f"{name}.npz"
        if npz is not None and npz.is_file():
            with np.load(npz) as data:
                result.labels, result.probs = data["labels"], data["probs"]
        results[name] = result
    return results


def order(
    results: dict[str, Result], models: list[str], targets: list[str] | None = None
) -> dict[str, Result]:
    """The study's results only, in params' ``models`` order, then by target.

    Metrics of a model or target no longer in params.yaml are left out: a file from an
    earlier configuration must not pass for a result of this one.
    """
    rank = {m: i for i, m in enumerate(models)}
    kept = [
        kv
        for kv in results.items()
        if kv[1].model in rank and (targets is None or kv[1].target in targets)
    ]
    return dict(sorted(kept, key=lambda kv: (rank[kv[1].model], kv[1].target)))


def results_table(
    results: dict[str, Result],
    params: Params,
    tunings: dict[str, dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per model x target x seed: what reports/results.csv holds.

    With each run's settings (the chosen ones, when tuned) and the split that chose them.
    """
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    syn = params.data.synthetic
    data: dict[str, Any] = {"data": params.data.source, "dense": params.preprocess.dense}
    if params.data.source == "synthetic":  # the teacher that drew the labels
        data["teacher"] = syn.teacher
        data.update({f"teacher_{k}": v for k, v in syn.shape().model_dump().items()})
    rows = []
    for r in results.values():
        for seed in r.metrics["seeds"]:
            run = r.metrics["runs"][str(seed)]
            rows.append(
                {
                    "model": r.model,
                    "target": r.target,
                    "seed": seed,
                    "preset": params.preset,
                    "protocol": params.preprocess.protocol,
                    **data,
                    "split": r.metrics.get("split", "test"),
                    "auc": run["auc"],
                    "logloss": run["logloss"],
                    "accuracy": run.get("accuracy"),
                    "parameters": run.get("parameters"),
                    "epochs": run.get("epochs"),
                    "train_seconds": run.get("train_seconds"),
                    "train_samples_per_s": run.get("train_samples_per_s"),
                    "inference_samples_per_s": run.get("inference_samples_per_s"),
                    "checkpoint": run.get("checkpoint"),
                    "checkpoint_epoch": run.get("checkpoint_epoch"),
                    **{k: _cell(v) for k, v in r.metrics.get("settings", {}).items()},
                    "tuned_on": (tunings or {}).get(r.name, {}).get("split"),
                    "commit": commit,
                }
            )
    return pd.DataFrame(rows)


def _cell(value: Any) -> Any:
    """A setting as one CSV cell (a list of layer widths as 256-128)."""
    return "-".join(map(str, value)) if isinstance(value, list | tuple) else value


def write_results(table: pd.DataFrame, path: str | Path) -> None:
    """results.csv, written atomically with fixed float formatting (same inputs, same bytes)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g", lineterminator="\n")


def _pm(mean: float, sd: float | None, digits: int = 4) -> str:
    if sd is None or not np.isfinite(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def comparisons(
    results: dict[str, Result], reference: str = "deepfm", n_resamples: int = 1000
) -> pd.DataFrame:
    """Every model against ``reference`` on the same target, seed by seed, same test rows.

    - paired difference: reference AUC - model AUC per seed; its mean, SD and 95 % t
      interval over the seeds (the spread a change of seed makes);
    - DeLong's test of the two correlated AUCs on the same rows, per seed: the largest
      p-value over the seeds is reported (the difference must hold for every seed);
    - bootstrap 95 % interval of each model's AUC (positives and negatives resampled
      separately; first seed).
    The rule for calling a difference real: the paired interval excludes 0 and DeLong's
    p < 0.05 for every seed.
    """
    rows = []
    for r in results.values():
        ref = results.get(f"{reference}-{r.target}")
        row: dict[str, Any] = {"model": r.model, "target": r.target}
        if r.labels is not None:
            lo, hi = significance.auc_bootstrap_ci(r.labels, r.probs[:, 0], n_resamples=n_resamples)
            row["auc_bootstrap_95"] = f"[{lo:.4f}, {hi:.4f}]"
        if ref is not None and ref is not r and ref.metrics["seeds"] == r.metrics["seeds"]:
            diff = significance.paired_difference(ref.seed_aucs(), r.seed_aucs())
            row["diff_mean"] = diff.mean
            row["diff_sd"] = diff.sd
            row["diff_ci95"] = f"[{diff.ci_low:+.4f}, {diff.ci_high:+.4f}]"
            if r.labels is not None and ref.labels is not None:
                ps = [
                    significance.delong_test(r.labels, ref.probs[:, k], r.probs[:, k]).p_value
                    for k in range(r.probs.shape[1])
                ]
                row["delong_p_max"] = max(ps)
                row["real"] = bool(diff.ci_low > 0 or diff.ci_high < 0) and max(ps) < 0.05
        rows.append(row)
    return pd.DataFrame(rows)


def study_table(
    results: dict[str, Result],
    comparison: pd.DataFrame,
    reference: str = "deepfm",
    base: str = "lr",
    tuned_keys: dict[str, list[str]] | None = None,
) -> pd.DataFrame:
    """The study's answer in one table: each model over seeds, beside the paper and BARS.

    ``tuned_keys``: per model, the settings its grid varied (shown as chosen).
    """
    tuned_keys = tuned_keys or {}
    comp = {(c["model"], c["target"]): c for c in comparison.to_dict("records")}
    rows = []
    for r in results.values():
        m = r.metrics
        base_r = results.get(f"{base}-{r.target}")
        # A model compared with nothing (DeepFM itself) has NaN in the records: show text.
        own = "reference" if r.model == reference else ""
        c = {k: v for k, v in comp.get((r.model, r.target), {}).items() if not pd.isna(v)}
        first = m["runs"][str(m["seeds"][0])]
        secs = [m["runs"][str(s)].get("train_seconds") for s in m["seeds"]]
        secs = [x for x in secs if x is not None]
        delong = c.get("delong_p_max")
        rows.append(
            {
                "model": MODEL_LABELS.get(r.model, r.model),
                "target": r.target,
                "parameters": f"{first.get('parameters') or 0:,}",
                "seeds": len(m["seeds"]),
                "AUC mean ± SD": _pm(m["auc"], m.get("auc_sd")),
                "logloss mean ± SD": _pm(m["logloss"], m.get("logloss_sd")),
                f"gain over {MODEL_LABELS.get(base, base)} (%)": ""
                if base_r is None
                else f"{significance.gain_over(m['auc'], base_r.metrics['auc']):+.2f}",
                f"{MODEL_LABELS.get(reference, reference)} − model, 95 % CI": c.get(
                    "diff_ci95", own
                ),
                "DeLong p (max over seeds)": own if delong is None else f"{delong:.2g}",
                "beyond seed noise": {True: "yes", False: "no"}.get(c.get("real"), own),
                "AUC bootstrap 95 % (1st seed)": c.get("auc_bootstrap_95", ""),
                "chosen settings": _chosen(m.get("settings", {}), tuned_keys.get(r.model)),
                "epoch scored, per seed": ", ".join(
                    str(m["runs"][str(s)].get("checkpoint_epoch")) for s in m["seeds"]
                ),
                "seconds per run": f"{np.mean(secs):.0f}" if secs else "",
                "paper Table 2": PAPER_TABLE2.get(r.model, ""),
                "BARS": BARS.get(r.model, ""),
            }
        )
    return pd.DataFrame(rows).set_index(["model", "target"])


def _chosen(settings: dict[str, Any], keys: list[str] | None) -> str:
    keys = ["lr", "l2"] if keys is None else keys
    return ", ".join(f"{k} {_show(settings[k])}" for k in keys if k in settings) or "preset"


def seed_figure(results: dict[str, Result], data_summary: dict[str, Any]) -> plt.Figure:
    """Each seed's test AUC per model, its mean ± SD, and the teacher's parts as lines."""
    data = pd.DataFrame(
        [
            {"model": f"{MODEL_LABELS.get(r.model, r.model)}\n{r.target}", "seed": str(s), "auc": a}
            for r in results.values()
            for s, a in zip(r.metrics["seeds"], r.seed_aucs(), strict=True)
        ]
    )
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if not data.empty:
        sns.pointplot(
            data=data,
            x="model",
            y="auc",
            errorbar="sd",
            color="black",
            linestyle="none",
            capsize=0.2,
            marker="_",
            ax=ax,
        )
        # dodge, not jitter: seaborn's jitter is unseeded, and the page must be the same bytes
        sns.stripplot(
            data=data, x="model", y="auc", hue="seed", size=7, jitter=False, dodge=True, ax=ax
        )
    parts = data_summary.get("oracle_parts") or {}
    styles = {"linear": ":", "linear+fm": "-.", "all": "--"}
    for key, style in styles.items():
        if parts.get(key) is not None:
            ax.axhline(
                parts[key], ls=style, color="grey", lw=1, label=f"teacher {key}: {parts[key]:.4f}"
            )
    if not parts and data_summary.get("oracle_auc") is not None:
        ax.axhline(
            data_summary["oracle_auc"],
            ls="--",
            color="grey",
            label=f"teacher: {data_summary['oracle_auc']:.4f}",
        )
    ax.legend(fontsize=8, loc="lower right")
    ax.set(title="Test AUC of every seed (bar: mean ± SD over seeds)", xlabel="", ylabel="AUC")
    fig.tight_layout()
    return fig


def _curves_frame(results, attr: str) -> pd.DataFrame:
    frames = []
    for r in results.values():
        curves = r.curves if isinstance(r, Result) else r
        df = getattr(curves, attr)
        if not df.empty:
            frames.append(df.assign(run=curves.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def loss_figure(results: dict[str, Result] | Curves, smooth: int = 20) -> plt.Figure:
    """Per-step training loss per model: mean over seeds of a rolling mean, band one SD."""
    results = {results.name: results} if isinstance(results, Curves) else results
    data = _curves_frame(results, "loss")
    fig, ax = plt.subplots(figsize=(8, 4))
    if not data.empty:
        data["smoothed"] = data.groupby(["run", "seed"])["loss"].transform(
            lambda x: x.rolling(smooth, min_periods=1).mean()
        )
        sns.lineplot(data=data, x="step", y="smoothed", hue="run", errorbar="sd", ax=ax)
    ax.set(
        title=f"Training loss per step (mean over seeds of {smooth}-step means; band: SD)",
        ylabel="loss (cross-entropy + L2)",
    )
    fig.tight_layout()
    return fig


def auc_figure(results: dict[str, Result] | Curves, oracle_auc: float | None = None) -> plt.Figure:
    """Evaluation-split AUC per epoch per model (mean over seeds, band: SD), and the ceiling."""
    results = {results.name: results} if isinstance(results, Curves) else results
    data = _curves_frame(results, "evals")
    fig, ax = plt.subplots(figsize=(8, 4))
    if not data.empty:
        sns.lineplot(data=data, x="epoch", y="auc", hue="run", errorbar="sd", marker="o", ax=ax)
    if oracle_auc is not None:
        ax.axhline(oracle_auc, ls="--", color="grey", label=f"teacher (oracle) {oracle_auc:.4f}")
        ax.legend()
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(title="AUC on the per-epoch evaluation split (mean over seeds; band: SD)", ylabel="AUC")
    fig.tight_layout()
    return fig


def load_tuning(
    tune_dir: str | Path, models: list[str], targets: list[str]
) -> dict[str, dict[str, Any]]:
    """Each model's search (reports/tune/<model>-<target>.json), in params' order."""
    found = {}
    for model in models:
        for target in targets:
            path = Path(tune_dir) / f"{model}-{target}.json"
            if path.is_file():
                found[f"{model}-{target}"] = read_json(path)
    return found


def _split_name(split: str) -> str:
    return {"valid": "validation", "test": "test"}.get(split, split)


def protocol_paragraph(params: Params, tunings: dict[str, dict[str, Any]]) -> str:
    """How every model was tuned, stopped and scored, and which split chose what."""
    if not tunings:
        return "No model has been tuned yet (stage tune@<model>-<target>)."
    first = next(iter(tunings.values()))
    split = _split_name(first["split"])
    counts = ", ".join(f"{t['model']} {len(t['points'])}" for t in tunings.values())
    text = (
        f"**Protocol.** Every model was tuned on its own, the same way: each point of its "
        f"grid (`tune.grid`; {counts}"
        f" points) was trained on seed {first['seed']} with early stopping on the "
        f"**{split}** AUC (stop after {first['patience']} epochs without a better AUC, at most "
        f"{first['max_epochs']} epochs). The point with the best {split} AUC was chosen, "
        f"with its best epoch. Then every seed of train.seeds ran with the chosen settings, "
        f"early-stopped the same way (the search seed's run is the search's own), and each "
        f"seed's checkpoint of its best {split} epoch was scored **once on the test split**. "
    )
    capped = [
        MODEL_LABELS.get(t["model"], t["model"])
        for t in tunings.values()
        if t["chosen"]["epoch"] == t["max_epochs"]
    ]
    if capped:
        text += (
            f"{', '.join(capped)} reached {'its' if len(capped) == 1 else 'their'} best "
            f"{split} AUC at the last allowed epoch ({first['max_epochs']}): still improving, "
            "so a larger `train.epochs` may raise them; the others stopped on their own. "
        )
    if first["test_steered"]:
        text += (
            "**Caution: the `zoo` protocol has no validation split, so the test split chose "
            "the settings and the epoch: the test figures below are optimistic.** Set "
            "`preprocess.protocol: clean` for a fair comparison."
        )
    else:
        text += "The test split chose nothing."
    return text


def reference_paragraph(reference: dict[str, Any], results: dict[str, Result]) -> str:
    """scikit-learn's LR beside the study's tuned `lr`: did `lr` reach what LR can do?"""
    if not reference.get("enabled", False):
        return "The scikit-learn reference was switched off (`reference.enabled`)."
    if "skipped" in reference:
        return f"The scikit-learn reference was skipped: {reference['skipped']}."
    text = (
        f"**An independent check of LR.** scikit-learn's `LogisticRegression` (lbfgs, to "
        f"convergence) on the same one-hot ids and weights, C = {reference['C']:g} chosen on "
        f"the {_split_name(reference['chosen_on'])} split from "
        f"{', '.join(format(t['C'], 'g') for t in reference['tried'].values())}, scores test AUC "
        f"**{reference['auc']:.4f}** and logloss {reference['logloss']:.4f} (one fit; "
        "lbfgs is deterministic)."
    )
    for r in results.values():
        if r.model == "lr":
            gap = r.metrics["auc"] - reference["auc"]
            ours = _pm(r.metrics["auc"], r.metrics.get("auc_sd"))
            text += (
                f" The study's tuned `lr` on {r.target}: {ours} (mean ± SD over "
                f"{len(r.metrics['seeds'])} seeds), {gap:+.4f} from it."
            )
    return text


def tune_table(tunings: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every grid point of every model: its settings, where it stopped, its best AUC."""
    rows = []
    for t in tunings.values():
        split = _split_name(t["split"])
        for name, point in t["points"].items():
            rows.append(
                {
                    "model": MODEL_LABELS.get(t["model"], t["model"]),
                    "target": t["target"],
                    **{k: _show(v) for k, v in point["settings"].items()},
                    "epochs run": point["epochs"],
                    "best epoch": point["best_epoch"],
                    f"{split} AUC": f"{point['auc']:.4f}",
                    f"{split} logloss": f"{point['logloss']:.4f}",
                    "chosen": "✓" if name == t["chosen"]["point"] else "",
                }
            )
    return pd.DataFrame(rows).fillna("").set_index(["model", "target"])


def tune_figure(tunings: dict[str, dict[str, Any]]) -> plt.Figure:
    """Each grid point's evaluation AUC per epoch, one panel per model; the choice marked."""
    n = max(len(tunings), 1)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, t in zip(axes.flat, tunings.values(), strict=False):
        for point, result in t["points"].items():
            curve = pd.DataFrame(result["curve"])
            ax.plot(curve["epoch"], curve["auc"], marker=".", label=point)
        chosen = t["chosen"]
        ax.plot(chosen["epoch"], chosen["auc"], marker="*", ms=16, color="black", ls="none")
        ax.set(
            title=f"{MODEL_LABELS.get(t['model'], t['model'])} ({t['target']})",
            xlabel="epoch",
            ylabel=f"{_split_name(t['split'])} AUC",
        )
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tunings) :]:
        ax.axis("off")
    fig.suptitle("Tuning: evaluation AUC per epoch for each grid point (★ chosen point and epoch)")
    fig.tight_layout()
    return fig


def metrics_table(results: dict[str, Result]) -> pd.DataFrame:
    """One row per model x target: test-split quality (means over seeds) and throughput."""
    cols = [
        "device",
        "auc",
        "auc_sd",
        "logloss",
        "logloss_sd",
        "accuracy",
        "train_samples_per_s",
        "inference_samples_per_s",
    ]
    rows = {n: {c: r.metrics.get(c) for c in cols} for n, r in results.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.round(
        {
            "auc": 4,
            "auc_sd": 4,
            "logloss": 4,
            "logloss_sd": 4,
            "accuracy": 4,
            "train_samples_per_s": 0,
            "inference_samples_per_s": 0,
        }
    )


def gap_paragraph(results: dict[str, Result], data_summary: dict[str, Any]) -> str:
    """Where the distance to the synthetic teacher goes, in numbers (synthetic data only)."""
    oracle = data_summary.get("oracle_auc")
    if oracle is None:
        return "No teacher on this data: the ceiling is unknown (real Criteo)."
    parts = data_summary.get("oracle_parts") or {}
    by_model = {r.model: r.metrics["auc"] for r in results.values()}
    text = [f"The teacher that drew the labels scores **{oracle:.4f}** on the test rows."]
    if parts:
        text.append(
            f"Its parts alone: linear {parts['linear']:.4f}, linear + FM "
            f"{parts['linear+fm']:.4f}; the MLP part adds "
            f"{parts['all'] - parts['linear+fm']:+.4f}."
        )
        for model, part, what in (
            ("lr", "linear", "linear part"),
            ("fm", "linear+fm", "linear + FM part"),
        ):
            if model in by_model:
                gap = by_model[model] - parts[part]
                side = "above" if gap > 0 else "below"
                text.append(
                    f"{MODEL_LABELS[model]} ({by_model[model]:.4f}) lands {abs(gap):.4f} {side} "
                    f"the teacher's {what}"
                    + (
                        " (a model of that family can also absorb some of the other terms' signal)."
                        if gap > 0
                        else " (what estimating its weights from these rows, with rare values "
                        "folded into each field's out-of-vocabulary id, costs)."
                    )
                )
    if "deepfm" in by_model:
        text.append(
            f"DeepFM ({by_model['deepfm']:.4f}, mean over seeds) is "
            f"{oracle - by_model['deepfm']:.4f} below the ceiling."
        )
    return " ".join(text)


def curve_frame(curve: dict[str, Any]) -> pd.DataFrame:
    """The learning curve's points (stage curve), one row per model x training rows."""
    points = curve.get("points") or {}
    if not points:
        return pd.DataFrame()
    frame = pd.DataFrame(list(points.values()))
    frame["gap"] = frame["oracle_auc"] - frame["auc"]
    return frame.sort_values(["model", "rows"], ignore_index=True)


def curve_figure(curve: dict[str, Any]) -> plt.Figure:
    """Test AUC against training rows per model, the teacher on the same rows; the OOV share."""
    data = curve_frame(curve)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if not data.empty:
        data = data.assign(label=data["model"].map(lambda m: MODEL_LABELS.get(m, m)))
        sns.lineplot(data=data, x="train_rows", y="auc", hue="label", marker="o", ax=left)
        teacher = data.drop_duplicates("rows")
        for column, style, name in (
            ("oracle_auc", "--", "teacher (all)"),
            ("oracle_linear+fm", "-.", "teacher linear + FM"),
        ):
            if column in teacher:
                x, y = teacher["train_rows"], teacher[column]
                left.plot(x, y, ls=style, color="grey", label=name)
        left.legend(fontsize=8)
        right.plot(teacher["train_rows"], 100 * teacher["test_oov_share"], marker="o")
        for x in (left, right):
            x.set_xscale("log")
    left.set(title="Test AUC (one seed) against training rows", xlabel="training rows")
    right.set(
        title="Test values folded into a field's OOV id",
        xlabel="training rows",
        ylabel="% of categorical values",
    )
    fig.tight_layout()
    return fig


def curve_paragraph(curve: dict[str, Any]) -> str:
    """What the learning curve says about the gap to the teacher, in numbers."""
    data = curve_frame(curve)
    if data.empty:
        return (
            "The learning curve was not run (it is opt-in, about 10 minutes on 2 cores): "
            "`dvc exp run -S curve.enabled=true` adds it to this page."
        )
    small, large = data["rows"].min(), data["rows"].max()
    text = [
        f"Each point draws its own rows from the same teacher and runs this study's "
        f"preprocess, training ({curve['epochs']} epochs) and scoring, seed {curve['seed']}, "
        "on its own test split (the teacher's AUC is measured on the same rows)."
    ]
    for model in curve.get("models") or data["model"].unique():
        rows = data[data["model"] == model]
        a, b = rows.iloc[0], rows.iloc[-1]
        closed = (a["gap"] - b["gap"]) / a["gap"] if a["gap"] > 0 else float("nan")
        text.append(
            f"{MODEL_LABELS.get(model, model)}: {a['auc']:.4f} at {a['train_rows']:,} training "
            f"rows ({a['gap']:.4f} below the teacher), {b['auc']:.4f} at {b['train_rows']:,} "
            f"({b['gap']:.4f} below): {closed:.0%} of the gap closed by "
            f"{b['train_rows'] / a['train_rows']:.1f}x the rows."
        )
    first = data[data["rows"] == small].iloc[0]
    last = data[data["rows"] == large].iloc[0]
    text.append(
        f"The share of test values folded into their field's out-of-vocabulary id (threshold "
        f"{int(first['threshold'])}) falls from {first['test_oov_share']:.1%} to "
        f"{last['test_oov_share']:.1%} over the same range, and the vocabulary grows from "
        f"{int(first['vocab_size']):,} to {int(last['vocab_size']):,} ids: the teacher gives "
        "every value its own weights, so each folded value is signal the models cannot see."
    )
    return " ".join(text)


def _label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def _labels(models: list[str]) -> str:
    return ", ".join(map(_label, models)) or "none"


def _teachers(sweep: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The sweep's teachers in sweep.teachers' order (the JSON's keys are sorted)."""
    found = sweep.get("teachers") or {}
    return [(name, found[name]) for name in sweep.get("order", sorted(found)) if name in found]


def sweep_frame(sweep: dict[str, Any]) -> pd.DataFrame:
    """The teacher sweep (stage sweep), one row per teacher x model: test AUC over seeds,
    its gap to the teacher on the same rows, and DeepFM's paired difference from it."""
    rows = []
    for teacher, t in _teachers(sweep):
        for model, m in t["models"].items():
            diff = t["deepfm_minus_model"].get(model, {})
            rows.append(
                {
                    "teacher": teacher,
                    "model": model,
                    "label": MODEL_LABELS.get(model, model),
                    "auc": m["auc"],
                    "auc_sd": m["auc_sd"],
                    "teacher_auc": t["oracle_auc"],
                    "gap": m["gap"],
                    "chosen": m["chosen"],
                    "deepfm_minus": diff.get("diff_mean"),
                    "beyond_noise": diff.get("real"),
                }
            )
    return pd.DataFrame(rows)


def sweep_figure(sweep: dict[str, Any]) -> plt.Figure:
    """Gap to the teacher (teacher AUC - model AUC, mean over seeds, bars: seed SD)."""
    data = sweep_frame(sweep)
    fig, ax = plt.subplots(figsize=(10, 4))
    if not data.empty:
        teachers, models = list(dict.fromkeys(data["teacher"])), list(dict.fromkeys(data["model"]))
        width = 0.8 / len(models)
        for k, model in enumerate(models):
            rows = data[data["model"] == model].set_index("teacher").reindex(teachers)
            x = np.arange(len(teachers)) + (k - (len(models) - 1) / 2) * width
            ax.bar(x, rows["gap"], width, yerr=rows["auc_sd"].astype(float), capsize=2,
                   label=MODEL_LABELS.get(model, model))  # fmt: skip
        ax.set_xticks(np.arange(len(teachers)), teachers)
        ax.legend(fontsize=8, ncol=len(models))
    ax.set(
        title="Gap to the teacher per model and teacher (test AUC, mean over seeds; bars: SD)",
        xlabel="teacher",
        ylabel="teacher AUC − model AUC",
    )
    fig.tight_layout()
    return fig


def sweep_table(sweep: dict[str, Any], reference: str = "deepfm") -> pd.DataFrame:
    """Per teacher: its parts' AUCs, the best model, and DeepFM − model with the verdict."""
    rows = []
    for teacher, t in _teachers(sweep):
        parts = t.get("oracle_parts") or {}
        best = max(t["models"], key=lambda m: t["models"][m]["auc"])
        row = {
            "teacher": teacher,
            "terms": _teacher_terms(t["settings"]),
            "teacher AUC: linear / + pairwise / all": " / ".join(
                f"{parts[k]:.4f}" for k in ("linear", "linear+fm", "all") if k in parts
            ),
            "best model (mean AUC)": f"{_label(best)} {t['models'][best]['auc']:.4f}",
        }
        for model, d in t["deepfm_minus_model"].items():
            verdict = "yes" if d["real"] else "no"
            row[f"{MODEL_LABELS.get(reference, reference)} − {MODEL_LABELS.get(model, model)}"] = (
                f"{d['diff_mean']:+.4f} {d['diff_ci95']}, p {d['delong_p_max']:.2g}: {verdict}"
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("teacher") if rows else pd.DataFrame()


def sweep_paragraph(sweep: dict[str, Any]) -> str:
    """What the sweep measured and, per teacher, which differences are beyond noise."""
    if not sweep.get("teachers"):
        return (
            "The teacher sweep was not run (it is opt-in; docs/study.md gives its time on 2 "
            "cores and what it found): `dvc exp run -S sweep.enabled=true` adds it to this page."
        )
    text = [
        f"Each teacher draws its own {sweep['lines']:,} lines (seed {sweep['data_seed']}, "
        f"scale {sweep['scale']}), split and preprocessed as the study's data "
        f"({sweep['protocol']} protocol, threshold {sweep['threshold']}, dense "
        f"{sweep['dense']}). Every model is tuned on the {_split_name(sweep['tuned_on'])} "
        f"split with its tune.grid and stopped early there, then trained with seeds "
        f"{', '.join(map(str, sweep['seeds']))}; test is scored once"
        + (
            " (under the zoo protocol test also chose the settings)"
            if sweep["tuned_on"] == "test"
            else ""
        )
        + ". AUC: mean ± SD over those seeds on each teacher's test split; a "
        "difference is beyond noise by the main table's rule (paired 95 % interval excludes "
        "0 and DeLong p < 0.05 for every seed)."
    ]
    for teacher, t in _teachers(sweep):
        wins = [m for m, d in t["deepfm_minus_model"].items() if d["real"] and d["diff_mean"] > 0]
        loses = [m for m, d in t["deepfm_minus_model"].items() if d["real"] and d["diff_mean"] < 0]
        ties = [m for m, d in t["deepfm_minus_model"].items() if not d["real"]]
        text.append(
            f"**{teacher}** (teacher AUC {t['oracle_auc']:.4f}): DeepFM "
            f"{t['models'].get('deepfm', {}).get('auc', float('nan')):.4f}; beats {_labels(wins)} "
            f"beyond noise, is beaten by {_labels(loses)}, not told apart from {_labels(ties)}."
        )
    return "\n\n".join(text)


def movielens_table(ml: dict[str, Any], reference: str = "deepfm") -> pd.DataFrame:
    """The MovieLens study per model: chosen settings, test AUC and logloss (mean ± SD over
    seeds), DeepFM − model, and RecBole's published AUCs beside, each with its protocol."""
    if not ml.get("models"):
        return pd.DataFrame()
    quick, bench = ml["recbole"]["ml-100k quick start"], ml["recbole"]["ml-1m benchmark"]
    rows = []
    for model in ml.get("order", ml["models"]):
        m, d = ml["models"][model], ml["deepfm_minus_model"].get(model)
        rows.append(
            {
                "model": _label(model),
                "chosen on validation": ", ".join(f"{k} {v:g}" for k, v in m["settings"].items()),
                "epoch scored": ", ".join(map(str, m["epochs"])),
                "test AUC": _pm(m["auc"], m["auc_sd"]),
                "test logloss": _pm(m["logloss"], m["logloss_sd"]),
                f"{_label(reference)} − model, 95 % CI, DeLong p": "reference"
                if d is None
                else f"{d['diff_mean']:+.4f} {d['diff_ci95']}, p {d['delong_p_max']:.2g}: "
                + ("beyond noise" if d["real"] else "not beyond noise"),
                "RecBole ml-100k quick start (AUC)": _published(quick["auc"].get(model)),
                "RecBole ml-1m benchmark (AUC, a 10x larger set)": _published(
                    bench["auc"].get(model) or bench["auc"].get({"dnn": "fnn"}.get(model, ""))
                ),
            }
        )
    return pd.DataFrame(rows).set_index("model")


def _published(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def movielens_paragraph(ml: dict[str, Any]) -> str:
    """What the MovieLens study measured, on what, and what it says about DeepFM's claim."""
    if not ml.get("models"):
        return (
            "The study on MovieLens-100K did not run (movielens.enabled is false): "
            "`dvc exp run -S movielens.enabled=true` adds it to this page."
        )
    rows, s = ml["rows"], ml["settings"]
    dropped = ", ratings of 3 dropped" if s["drop_neutral"] else ", ratings of 3 kept"
    text = [
        f"**Data.** MovieLens-100K ({ml['citation']}), read from RecBole's copy in the pinned "
        f"recbole 1.2.1 wheel and never redistributed. RecBole's context-aware protocol: "
        f"positive when the rating is {s['label_threshold']} or more{dropped}; fields "
        "user, film, age, gender, occupation, release year and the genres (each of a film's "
        f"k genres weighted 1/k). A random split (seed {ml['split_seed']}) gives "
        f"{rows['train']:,} / {rows['valid']:,} / {rows['test']:,} train / validation / test "
        f"ratings ({ml['positive_rate']['test']:.1%} of test positive). Every model is tuned "
        f"on the validation split with its tune.grid and stopped early there, then trained "
        f"with seeds {', '.join(map(str, ml['seeds']))}; test is scored once. AUC and "
        "logloss: mean ± SD over those seeds on the test split."
    ]
    if ml.get("reference_lr_auc") is not None:
        lr = ml["models"].get("lr", {}).get("auc")
        text.append(
            f"scikit-learn's LogisticRegression on the same one-hot ids (C chosen on "
            f"validation) scores test AUC {ml['reference_lr_auc']:.4f}"
            + (f"; the study's LR {lr:.4f}." if lr is not None else ".")
        )
    diffs = ml["deepfm_minus_model"]
    wins = [m for m, d in diffs.items() if d["real"] and d["diff_mean"] > 0]
    loses = [m for m, d in diffs.items() if d["real"] and d["diff_mean"] < 0]
    ties = [m for m, d in diffs.items() if not d["real"]]
    text.append(
        f"**DeepFM's claim on real data.** DeepFM scores "
        f"{ml['models'].get('deepfm', {}).get('auc', float('nan')):.4f}; it beats "
        f"{_labels(wins)} beyond noise, is beaten by {_labels(loses)} and is not told apart "
        f"from {_labels(ties)} (the main table's rule: paired 95 % interval excludes 0 and "
        "DeLong p < 0.05 for every seed)."
    )
    text.append(
        "**Published figures.** RecBole's ml-100k quick start (LR, the same threshold, ratings "
        "of 3 kept, embedding 10, RecBole's default settings, its own random split) is the "
        "one measured on this data set. Its ml-1m benchmark (ratings of 3 dropped, embedding "
        "16, a grid per model) is on MovieLens-1M, about ten times the ratings: those AUCs "
        "are higher because the set is bigger and easier, not comparable figure for figure; "
        "its FNN (an MLP over the embeddings) stands in the DNN row. RecBole also feeds the "
        "timestamp as a feature; this study does not."
    )
    return "\n\n".join(text)


def movielens_results(ml: dict[str, Any], params: Params) -> pd.DataFrame:
    """The MovieLens runs as rows of reports/results.csv (data: movielens)."""
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    rows = [
        {
            "model": model,
            "target": ml["target"],
            "seed": int(seed),
            "preset": params.preset,
            "protocol": "clean",
            "data": "movielens",
            "split": "test",
            "auc": run["auc"],
            "logloss": run["logloss"],
            "epochs": run.get("epochs"),
            "checkpoint_epoch": run.get("checkpoint_epoch"),
            **{k: _cell(v) for k, v in m["settings"].items()},
            "tuned_on": ml["tuned_on"],
            "commit": commit,
        }
        for model, m in (ml.get("models") or {}).items()
        for seed, run in m.get("runs", {}).items()
    ]
    return pd.DataFrame(rows)


def settings_table(params: Params, only_differing: bool = False) -> pd.DataFrame:
    """The settings of each target, flattened to dotted keys as `dvc params diff` shows them.

    With `only_differing`, rows whose value is the same for every target are left out.
    """
    rows = {}
    for name, target in params.targets.items():
        row = {
            "preset": params.preset,
            "models": " ".join(params.models),
            "device": target.device,
            "precision": target.precision,
            "workers": target.workers,
            "nodes": target.nodes,
        }
        row |= {f"model.{k}": v for k, v in params.model_settings().model_dump().items()}
        row |= {f"train.{k}": v for k, v in params.train_settings(name).model_dump().items()}
        row["evaluate.batch_size"] = params.evaluate.batch_size
        # As text: a table of mixed types would print eps 5e-8 as 0.0.
        rows[name] = pd.Series({k: _show(v) for k, v in row.items()}, dtype=object)
    table = pd.DataFrame(rows)
    if only_differing:
        table = table[table.nunique(axis=1) > 1]
    return table


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def comparison_table(
    results: dict[str, Result], data_summary: dict[str, Any], synthetic: bool
) -> pd.DataFrame:
    """DeepFM's test AUC and logloss beside the published ones (or the oracle, on synthetic)."""
    ours = [
        {
            "source": f"this study, DeepFM on {r.target}",
            "auc": r.metrics["auc"],
            "logloss": r.metrics["logloss"],
            "ms_per_step": np.mean(
                [v.get("train_ms_per_step") or np.nan for v in r.metrics["runs"].values()]
            ),
            "meaning": f"test split, one global AUC over every row; mean of "
            f"{len(r.metrics['seeds'])} seeds",
        }
        for r in results.values()
        if r.model == "deepfm"
    ]
    if synthetic:
        ceiling = [
            {
                "source": "teacher that generated the labels (oracle)",
                "auc": data_summary.get("oracle_auc"),
                "logloss": None,
                "ms_per_step": None,
                "meaning": "the best any model can do on this synthetic data",
            }
        ]
        table = pd.DataFrame(ours + ceiling)
    else:
        table = pd.concat([pd.DataFrame(ours), PUBLISHED])
    table = table.set_index("source").round({"auc": 4, "logloss": 4, "ms_per_step": 2})
    return table.astype(object).where(table.notna(), "")


def _parameters(vocab: int, emb: int, fields: int, layers: list[int]) -> int:
    dims = [fields * emb, *layers, 1]
    return vocab * (emb + 1) + sum(i * o + o for i, o in zip(dims, dims[1:], strict=False))


def zoo_facts(params: Params, vocab_size: int | None, fields: int | None) -> pd.DataFrame:
    """The zoo's quirks a reproducer must know, and which of them this run followed.

    ``vocab_size`` and ``fields`` (the row width) are the preprocessed data's."""
    m, t, protocol = params.model_settings(), params.train_settings(), params.preprocess.protocol
    if vocab_size and fields:
        n = _parameters(vocab_size, m.emb_dim, fields, m.deep_layers)
        count = f"{n:,} parameters (vocabulary {vocab_size:,}, embedding {m.emb_dim})"
    else:
        count = "unknown (no vocabulary yet)"
    schedule = (t.batch_size, t.lr, t.epochs)
    which = {(16000, 5e-4, 5): "the zoo's config", (1000, 1e-5, 15): "the zoo's README table"}
    rows = [
        (
            "Its network has 18,867,222 parameters at its configuration; its README says 16.5M.",
            count,
        ),
        (
            "Its keep_prob 0.9 never reaches the dropout layer: it trains without dropout.",
            "no dropout, as the zoo in effect" if m.dropout == 0 else f"dropout {m.dropout}",
        ),
        (
            "Its README's table says batch 1000, lr 1e-5, 15 epochs; its config says batch "
            "16000, lr 5e-4, 5 epochs.",
            f"batch {t.batch_size}, lr {t.lr:g}, {t.epochs} epochs: "
            f"{which.get(schedule, 'neither (preset ' + params.preset + ')')}",
        ),
        (
            "It scores the test split after every epoch: the split it reports also steered "
            "the run.",
            "followed (protocol zoo)"
            if protocol == "zoo"
            else "fixed: validation split per epoch, test scored once (protocol clean)",
        ),
        (
            "Its vocabulary and dense maxima are computed over all rows, test rows included.",
            "followed (protocol zoo)"
            if protocol == "zoo"
            else "fixed: from training rows only (protocol clean)",
        ),
        (
            "Its split is decided per block of 1,000 lines; the trailing partial block is dropped.",
            f"followed (protocol zoo, blocks of {params.preprocess.rows_per_record:,} lines)"
            if protocol == "zoo"
            else "fixed: seeded row-level 8:1:1 split, no row dropped (protocol clean)",
        ),
        (
            "Adam updates every row of the embedding tables every step, and L2 covers whole "
            "tables.",
            _update_rule(params),
        ),
    ]
    return pd.DataFrame(rows, columns=["the model zoo", "this run"])


def _update_rule(params: Params) -> str:
    lazy = [name for name in params.targets if params.train_settings(name).lazy_adam]
    if not lazy:
        return "followed (train.lazy_adam: false)"
    return (
        f"changed on {', '.join(lazy)} (train.lazy_adam: true): lazy Adam on the rows a batch "
        "touches, L2 on those rows only. A different optimisation: not the zoo's numbers."
    )


def _teacher_terms(shape: dict[str, Any]) -> str:
    """A teacher's term weights and dense transform in words (config.TeacherParams)."""
    return (
        f"linear x{shape['linear']:g}, pairwise x{shape['pairwise']:g}, higher-order "
        f"x{shape['higher_order']:g} (MLP gain {shape['mlp_gain']:g}), dense {shape['dense']}"
    )


def headline(params: Params, results: dict[str, Result], data_summary: dict[str, Any]) -> str:
    """The paragraph a reader sees first: what ran, on what data, and how well."""
    d, t, m = params.data, params.train_settings(), params.model_settings()
    rows = sum(data_summary.get("rows", {}).values())
    if d.source == "synthetic":
        terms = _teacher_terms(d.synthetic.shape().model_dump())
        data = (
            f"**synthetic** Criteo-format data ({rows:,} rows, generated here; labels from "
            f"the known teacher `{d.synthetic.teacher}`: {terms}"
            "). These numbers are *not* comparable with Criteo results: the ceiling is the "
            "teacher's own AUC."
        )
    else:
        data = f"the **Criteo Kaggle** data ({rows:,} rows after preprocessing)."
    if params.preprocess.dense != "max":
        f = params.preprocess.dense
        data += f" Dense values reach the models as {f}(x) / {f}(max), not the zoo's x / max."
    seeds = params.seeds()
    chose = (
        "the **validation** split"
        if params.preprocess.protocol == "clean"
        else "the **test** split (the zoo protocol has none for validation: optimistic)"
    )
    lines = [
        f"This run used {data} Each model's learning rate, L2 and epoch were chosen on "
        f"{chose} (its own grid, early stopping; see *How each model was tuned*). Then each "
        f"model was trained once per seed ({', '.join(map(str, seeds))}; a seed sets the "
        "initial weights and the shuffling order, the data and its split stay fixed) and "
        "scored once on the test split. Figures are the **mean ± SD over "
        f"the {len(seeds)} seeds** (SD, not SE) unless a column says otherwise.",
        "",
    ]
    for r in results.values():
        line = (
            f"* **{MODEL_LABELS.get(r.model, r.model)}** on {r.target}: test AUC "
            f"**{_pm(r.metrics['auc'], r.metrics.get('auc_sd'))}**, logloss "
            f"{_pm(r.metrics['logloss'], r.metrics.get('logloss_sd'))}"
        )
        lines.append(line)
    if d.source == "synthetic" and data_summary.get("oracle_auc") is not None:
        lines.append(f"* the teacher (ceiling): {data_summary['oracle_auc']:.4f}")
    if not results:
        lines.append("* no model has finished evaluation yet")
    lines += [
        "",
        f"Preset **{params.preset}**, preprocessing protocol **{params.preprocess.protocol}** "
        f"(threshold {params.preprocess.threshold}); batch {t.batch_size}, Adam eps {t.eps}, "
        f"at most {t.epochs} epochs (patience {t.patience or 'off'}), loss scale "
        f"{t.loss_scale}, embedding {m.emb_dim}, MLP {m.deep_layers}, dropout {m.dropout}; "
        f"lr and L2 per model as tuned (preset: lr {t.lr}, L2 {m.l2}); "
        f"table updates: {_update_rule(params).rstrip('.')}.",
    ]
    return "\n".join(lines)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def environment(params: Params) -> pd.Series:
    """Versions, hardware, commit and seed: what a reader needs to rerun this exactly."""

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    # The pipeline's own records (dvc.lock, reports/) change during a run; the question is
    # whether the code and settings that produced it are committed.
    status = _git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!reports"
    )
    gpu = None
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        gpu = ", ".join(sorted(set(out.stdout.split("\n")) - {""})) or None
    return pd.Series(
        {
            "python": sys.version.split()[0],
            "mindspore": version("mindspore"),
            "dvc": version("dvc"),
            "numpy": version("numpy"),
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "gpu": gpu or "none found (nvidia-smi)",
            "git commit": _git("rev-parse", "--short", "HEAD") or "unknown",
            "tree clean (code, settings)": "unknown"
            if status is None
            else ("yes" if status == "" else "no"),
            "seeds": " ".join(str(x) for x in params.seeds()),
        }
    )


def export_html(notebook: str | Path, html: str | Path) -> None:
    """One self-contained HTML page: inputs hidden, images inline, no CDN scripts."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="offline",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    with atomic_path(html) as tmp:
        tmp.write_text(body, encoding="utf-8")


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deepfm_lib.pipeline.report")
    sub = parser.add_subparsers(dest="command", required=True)
    html = sub.add_parser("html", help="export an executed report notebook to offline HTML")
    html.add_argument("notebook", type=Path)
    html.add_argument("output", type=Path)
    args = parser.parse_args()
    export_html(args.notebook, args.output)


if __name__ == "__main__":
    _main()
