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
import pandas as pd
import seaborn as sns

from deepfm_lib.io import atomic_path, read_json
from deepfm_lib.params import Params

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


@dataclass
class Run:
    """What one device target left behind: its metrics and its training curves."""

    target: str
    metrics: dict[str, Any]
    loss: pd.DataFrame
    evals: pd.DataFrame = field(default_factory=pd.DataFrame)


def load_runs(metrics_dir: str | Path, train_dir: str | Path) -> dict[str, Run]:
    """Every target that finished evaluation, in name order."""
    metrics_dir, train_dir = Path(metrics_dir), Path(train_dir)
    runs: dict[str, Run] = {}
    for target_dir in sorted(p for p in train_dir.iterdir() if p.is_dir()):
        target = target_dir.name
        metrics_file = metrics_dir / f"{target}.json"
        if not metrics_file.exists():
            continue
        evals_file = target_dir / "eval.csv"
        runs[target] = Run(
            target=target,
            metrics=read_json(metrics_file),
            loss=pd.read_csv(target_dir / "loss.csv"),
            evals=pd.read_csv(evals_file) if evals_file.exists() else pd.DataFrame(),
        )
    return runs


def loss_figure(runs: dict[str, Run], smooth: int = 20) -> plt.Figure:
    """Per-step training loss, raw (faint) and as a rolling mean, all targets overlaid."""
    frames = []
    for run in runs.values():
        df = run.loss[["step", "loss"]].copy()
        df["smoothed"] = df["loss"].rolling(smooth, min_periods=1).mean()
        df["target"] = run.target
        frames.append(df)
    data = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.lineplot(data=data, x="step", y="loss", hue="target", alpha=0.25, legend=False, ax=ax)
    sns.lineplot(data=data, x="step", y="smoothed", hue="target", ax=ax)
    ax.set(
        title=f"Training loss per step (faint: raw; solid: mean of {smooth} steps)",
        ylabel="loss (cross-entropy + L2)",
    )
    fig.tight_layout()
    return fig


def auc_figure(runs: dict[str, Run], oracle_auc: float | None = None) -> plt.Figure:
    """Validation AUC per epoch for every target, with the teacher's ceiling if known."""
    frames = [r.evals.assign(target=r.target) for r in runs.values() if not r.evals.empty]
    fig, ax = plt.subplots(figsize=(8, 4))
    if frames:
        data = pd.concat(frames, ignore_index=True)
        sns.lineplot(data=data, x="epoch", y="auc", hue="target", marker="o", ax=ax)
    if oracle_auc is not None:
        ax.axhline(oracle_auc, ls="--", color="grey", label=f"teacher (oracle) {oracle_auc:.4f}")
        ax.legend()
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(title="AUC on the per-epoch evaluation split", ylabel="AUC")
    fig.tight_layout()
    return fig


def metrics_table(runs: dict[str, Run]) -> pd.DataFrame:
    """One row per target: test-split quality and throughput."""
    cols = [
        "device",
        "auc",
        "logloss",
        "accuracy",
        "mean_prediction",
        "observed_ctr",
        "rows",
        "train_samples_per_s",
        "train_ms_per_step",
        "inference_samples_per_s",
    ]
    rows = {t: {c: r.metrics.get(c) for c in cols} for t, r in runs.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.round(
        {
            "auc": 4,
            "logloss": 4,
            "accuracy": 4,
            "mean_prediction": 4,
            "observed_ctr": 4,
            "train_samples_per_s": 0,
            "train_ms_per_step": 2,
            "inference_samples_per_s": 0,
        }
    )


def settings_table(params: Params, only_differing: bool = False) -> pd.DataFrame:
    """The settings of each target, flattened to dotted keys as `dvc params diff` shows them.

    With `only_differing`, rows whose value is the same for every target are left out.
    """
    rows = {}
    for name, target in params.targets.items():
        row = {
            "preset": params.preset,
            "seed": params.seed,
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
    runs: dict[str, Run], data_summary: dict[str, Any], synthetic: bool
) -> pd.DataFrame:
    """Our test AUC and logloss beside the published numbers (or the oracle, on synthetic)."""
    ours = [
        {
            "source": f"this study, target {t}",
            "auc": r.metrics["auc"],
            "logloss": r.metrics["logloss"],
            "ms_per_step": r.metrics.get("train_ms_per_step"),
            "meaning": "test split, one global AUC over every row",
        }
        for t, r in runs.items()
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


def zoo_facts(params: Params, vocab_size: int | None) -> pd.DataFrame:
    """The zoo's quirks a reproducer must know, and which of them this run followed."""
    m, t, protocol = params.model_settings(), params.train_settings(), params.preprocess.protocol
    if vocab_size:
        n = _parameters(vocab_size, m.emb_dim, 39, m.deep_layers)
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
            "followed (protocol zoo)"
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
    fast = [name for name in params.targets if params.train_settings(name).fast]
    if not fast:
        return "followed (train.fast: false)"
    return (
        f"changed on {', '.join(fast)} (train.fast: true): lazy Adam on the rows a batch "
        "touches, L2 on those rows only. A different optimisation: not the zoo's numbers."
    )


def headline(params: Params, runs: dict[str, Run], data_summary: dict[str, Any]) -> str:
    """The paragraph a reader sees first: what ran, on what data, and how well."""
    d, t, m = params.data, params.train_settings(), params.model_settings()
    rows = sum(data_summary.get("rows", {}).values())
    if d.source == "synthetic":
        data = (
            f"**synthetic** Criteo-format data ({rows:,} rows, generated here; labels from a "
            "known teacher). These numbers are *not* comparable with Criteo results: the "
            "ceiling is the teacher's own AUC."
        )
    else:
        data = f"the **Criteo Kaggle** data ({rows:,} rows after preprocessing)."
    lines = [f"This run used {data}", ""]
    for target, run in runs.items():
        line = (
            f"* target **{target}** ({run.metrics.get('device')}): test AUC "
            f"**{run.metrics['auc']:.4f}**, logloss {run.metrics['logloss']:.4f}"
        )
        if d.source == "synthetic" and data_summary.get("oracle_auc") is not None:
            line += f" (teacher: {data_summary['oracle_auc']:.4f})"
        lines.append(line)
    if not runs:
        lines.append("* no target has finished evaluation yet")
    lines += [
        "",
        f"Preset **{params.preset}**, preprocessing protocol **{params.preprocess.protocol}** "
        f"(threshold {params.preprocess.threshold}); batch {t.batch_size}, lr {t.lr}, "
        f"Adam eps {t.eps}, {t.epochs} epochs, loss scale {t.loss_scale}, embedding "
        f"{m.emb_dim}, MLP {m.deep_layers}, dropout {m.dropout}, L2 {m.l2}, seed {params.seed}; "
        f"table updates: {_update_rule(params).rstrip('.')}.",
    ]
    return "\n".join(lines)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
            "cpu": _cpu_model(),
            "gpu": gpu or "none found (nvidia-smi)",
            "git commit": _git("rev-parse", "--short", "HEAD") or "unknown",
            "tree clean (code, settings)": "unknown"
            if status is None
            else ("yes" if status == "" else "no"),
            "seed": params.seed,
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
    parser = argparse.ArgumentParser(prog="python -m deepfm_lib.report")
    sub = parser.add_subparsers(dest="command", required=True)
    html = sub.add_parser("html", help="export an executed report notebook to offline HTML")
    html.add_argument("notebook", type=Path)
    html.add_argument("output", type=Path)
    args = parser.parse_args()
    export_html(args.notebook, args.output)


if __name__ == "__main__":
    _main()
