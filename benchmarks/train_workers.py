"""Training throughput for 1 and N msrun workers, and what the gradient all-reduce costs.

    .venv/bin/python benchmarks/train_workers.py [--workers 2] [--rows 100000] [--epochs 1]

Synthetic Criteo-format data with params.yaml's synthetic settings (fewer rows) is
generated and preprocessed once under --cache and reused. The model and training settings
are params.yaml's preset (the small one by default) with the same GLOBAL batch for every
worker count, trained through `stages.train`, as the pipeline does: one worker in this
process, N through msrun. samples/s is the trainer's own figure: rows over the summed step
times, first step (compile) excluded, evaluation excluded.

Gradient communication is measured on its own in an N-worker msrun job: the gradient
all-reduce that deepfm_lib.engine.step runs in data-parallel mode (nn.DistributedGradReducer,
averaging) applied to tensors shaped like the model's gradients, timed over --reps calls
after a warm-up, plus the two scalar all-reduces per step that make the loss an exact
global mean. Every parameter's gradient is dense here (the embedding tables included), so
the gradient bytes per step are 4 x the parameter count.

Figures only: nothing is asserted. On a machine whose cores are shared, say the load next
to the figures (`uptime`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from cache_key import data_key  # noqa: E402  (after the path)

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "deepfm-repro/benchmarks"
)


def prepare_data(cache: Path, base: dict, rows: int) -> Path:
    """Preprocessed synthetic data (params.yaml's generator and preprocessing, `rows` rows)."""
    from deepfm_lib.config import PreprocessParams
    from deepfm_lib.data import synthetic
    from deepfm_lib.data.preprocess import preprocess
    from deepfm_lib.io import atomic_path

    syn, pre = base["data"]["synthetic"], base["preprocess"]
    key = data_key({"rows": rows, "synthetic": syn, "preprocess": pre})
    folder = cache / f"train_{rows}_{key}"
    processed = folder / "processed"
    if (processed / "stats.json").is_file():
        print(f"reusing {processed}")
        return processed
    print(f"generating and preprocessing {rows:,} rows into {folder} ...", flush=True)
    with atomic_path(folder) as tmp:  # complete, or not there at all
        synthetic.generate(tmp / "raw", rows, seed=syn["seed"], scale=syn["scale"], progress=False)
        cfg = PreprocessParams(**pre)
        preprocess(tmp / "raw" / "train.txt", tmp / "processed", cfg, progress=False)
    return processed


def params_for(base: dict, workers: int, epochs: int, port: int):
    """params.yaml with one CPU target of `workers` workers; the preset's global batch."""
    from deepfm_lib.config import parse

    raw = dict(base)
    raw["train"] = {
        **(raw.get("train") or {}),
        "epochs": epochs,
        "checkpoint_every_steps": 0,
        "seeds": [1001],
    }  # one run per worker count: the figure is its speed
    raw["targets"] = {"CPU": {"device": "CPU", "workers": workers, "master_port": port}}
    return parse(raw)


def train_once(params, data_dir: Path, work: Path) -> dict:
    from deepfm_lib.pipeline import stages

    out = stages.train(params, "deepfm", "CPU", data_dir, work / "model", work / "plots")
    return out["runs"][0]


def gradient_bytes(params, vocab: int) -> tuple[int, int]:
    """(parameters, bytes of their float32 gradients): what each step all-reduces."""
    from deepfm_lib.data.criteo import N_FIELDS
    from deepfm_lib.models import build
    from deepfm_lib.models.base import count_parameters

    n = count_parameters(build(params.network_config("deepfm", "CPU", vocab, N_FIELDS)))
    return n, 4 * n


def allreduce_cost(params, vocab: int, workers: int, reps: int, port: int) -> dict:
    """Run this file's `allreduce` mode on `workers` msrun ranks; rank 0's timings."""
    from deepfm_lib.config import ClusterParams
    from deepfm_lib.engine.parallel import launch

    with tempfile.TemporaryDirectory(prefix="allreduce-") as tmp:
        out = Path(tmp) / "result.json"
        (Path(tmp) / "params.json").write_text(json.dumps(params.model_dump(mode="json")))
        args = ["--params", str(Path(tmp) / "params.json"), "--vocab", str(vocab)]
        args += ["--reps", str(reps), "--out", str(out)]
        launch(
            ClusterParams(workers=workers, master_port=port),
            args,
            Path(tmp) / "logs",
            program=[str(Path(__file__).resolve()), "allreduce"],
        )
        return json.loads(out.read_text())


def _allreduce_worker(argv: list[str]) -> None:
    """One rank: time DistributedGradReducer on gradient-shaped tensors, as a train step does."""
    import mindspore as ms
    import numpy as np
    from mindspore import nn, ops

    from deepfm_lib.config import ClusterParams, Params
    from deepfm_lib.data.criteo import N_FIELDS
    from deepfm_lib.engine.parallel import Collective
    from deepfm_lib.models import build

    parser = argparse.ArgumentParser()
    for flag in ("--params", "--vocab", "--reps", "--out"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    params = Params.model_validate(json.loads(Path(args.params).read_text()))
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.device_context.cpu.op_tuning.threads_num(max(1, (os.cpu_count() or 1) // 2))
    collective = Collective.init(ClusterParams(workers=int(os.environ["MS_WORKER_NUM"])))
    weights = build(
        params.network_config("deepfm", "CPU", int(args.vocab), N_FIELDS)
    ).trainable_params()

    class Reduce(nn.Cell):
        def __init__(self):
            super().__init__()
            self.reducer = nn.DistributedGradReducer(weights, mean=True)

        def construct(self, grads):
            return self.reducer(grads)

    class Scalars(nn.Cell):  # the loss share and the global loss: two tiny all-reduces
        def __init__(self):
            super().__init__()
            self.all_reduce = ops.AllReduce()

        def construct(self, x):
            return self.all_reduce(self.all_reduce(x) + 1.0)

    grads = tuple(ms.Tensor(np.full(w.shape, 0.5, np.float32)) for w in weights)
    scalar = ms.Tensor(np.ones(2, np.float32))
    timings = {}
    for name, cell, inputs in (
        ("gradients", Reduce(), (grads,)),
        ("scalars", Scalars(), (scalar,)),
    ):
        cell(*inputs)  # compile
        ms.runtime.synchronize()
        start = time.perf_counter()
        for _ in range(int(args.reps)):
            out = cell(*inputs)
        (out[0] if isinstance(out, tuple) else out).asnumpy()
        timings[name] = 1000 * (time.perf_counter() - start) / int(args.reps)
    if collective.is_main:
        Path(args.out).write_text(json.dumps({"ms_" + k: v for k, v in timings.items()}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "allreduce":  # an msrun rank
        _allreduce_worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker count besides 1")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reps", type=int, default=20, help="all-reduce calls timed")
    parser.add_argument("--port", type=int, default=8119, help="msrun scheduler port")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()

    import logging

    from deepfm_lib.io import read_json

    logging.basicConfig(level=logging.WARNING)
    os.chdir(REPO)  # params.yaml's relative paths
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    data_dir = prepare_data(args.cache, base, args.rows)
    vocab = read_json(data_dir / "stats.json")["vocab_size"]
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores", flush=True)

    results = {}
    for workers in (1, args.workers):
        params = params_for(base, workers, args.epochs, args.port)
        with tempfile.TemporaryDirectory(prefix=f"bench-w{workers}-") as tmp:
            t = time.perf_counter()
            summary = train_once(params, data_dir, Path(tmp))
            summary["wall_with_launch_s"] = time.perf_counter() - t
        results[workers] = summary
    n_params, n_bytes = gradient_bytes(params, vocab)
    comm = allreduce_cost(params, vocab, args.workers, args.reps, args.port)

    t = params.train_settings("CPU")
    rows = read_json(data_dir / "stats.json")["splits"]["train"]["rows"]
    print()
    print(
        f"preset {params.preset}: vocab {vocab:,}, {n_params:,} parameters, global batch "
        f"{t.batch_size}, {args.epochs} epoch(s) of {rows:,} training rows"
    )
    print(f"{'workers':>8} {'samples/s':>10} {'ms/step':>8} {'steps':>6} {'wall incl. launch':>18}")
    for workers, s in results.items():
        print(
            f"{workers:>8} {s['samples_per_s']:>10,.0f} {s['ms_per_step']:>8.1f} {s['steps']:>6} "
            f"{s['wall_with_launch_s']:>16.1f} s"
        )
    print(
        f"gradient all-reduce ({args.workers} workers, mean, {n_bytes / 2**20:.2f} MiB = "
        f"{n_bytes:,} bytes per step per rank): {comm['ms_gradients']:.2f} ms per step; "
        f"the two scalar all-reduces: {comm['ms_scalars']:.2f} ms per step"
    )
    share = comm["ms_gradients"] + comm["ms_scalars"]
    print(
        f"communication is {100 * share / results[args.workers]['ms_per_step']:.0f}% of a "
        f"{args.workers}-worker step ({results[args.workers]['ms_per_step']:.1f} ms)"
    )
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
