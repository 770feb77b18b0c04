"""Training speed of the zoo config on this machine, per lever, against its matmul limit.

    .venv/bin/python benchmarks/train.py [--batches 1000 16000] [--variants ...] [--steps 8]

The network is the zoo preset's (vocab 184,965, emb 80, MLP 1024-512-256-128, loss scale
1024, Adam), fed batches read from synthetic shards (params.yaml's generator and
preprocessing, --rows rows, cached under --cache). Each (variant, batch) runs in a fresh
child process, because graph-kernel fusion is a process-wide MindSpore setting, so each
peak RSS is that child's own. ms/step is the median of --steps steps after two warm-up steps
(compile); it includes the host-to-tensor copies the trainer makes. "CPU ms" is the CPU time
of all the child's threads per step (the work, which a neighbour's load moves less).
The variants run in --rounds interleaved rounds (all variants, then all again), and the table
shows medians over the rounds: on a shared machine a burst of load then hits every variant
alike instead of one.

Variants (the levers):
  zoo_ref_gk   the zoo's own training graph (benchmarks/zoo_reference.py: its ops, its
               whole-table L2, TrainOneStepCell + Adam) with graph-kernel fusion on, as the
               issue ran the zoo: the same-machine baseline ("x zoo_ref_gk")
  zoo_ref      the same without graph-kernel fusion
  autodiff     nn.TrainOneStepCell over ModelWithLoss: autodiff through the lookups into
               dense zero tables (the step this project shipped first; the zoo's structure)
  autodiff_gk  the same with graph-kernel fusion (enable_graph_kernel)
  zoo          deepfm_lib.engine.step.TrainStep, the train stage's default on CPU: same maths, the
               embedding side in two fused C kernels (deepfm_lib.engine.kernels)
  zoo_ms       TrainStep with MindSpore's kernels only (the default on GPU/Ascend, or
               without a C compiler): the tables' gradients built as l2*T + scatter_add(rows)
  zoo_gk       zoo_ms with graph-kernel fusion
  zoo_fp16     zoo with the MLP's products in float16
  lazy         TrainStep(lazy_adam=True): lazy Adam on distinct touched rows (other semantics),
               fused kernels
  lazy_ms      lazy with MindSpore's kernels only

The limit: the same script times MindSpore's fp32 MatMul at the MLP's shapes for that batch:
the forward product and both backward products (dX = dY W^T, dW = X^T dY) of every layer,
each the best of several runs and of all rounds; the timed graph hands one element back, so
the copy of the product to the host is not counted. It divides their FLOPs by their time.
"of limit" is samples/s x 23.3 MFLOP (forward and backward of the MLP per sample) / that
FLOP/s. "x <first>" compares samples/s with the first variant within each round, then takes
the median (by default the first is the zoo's graph, rebuilt op for op, with graph kernel on:
the same-machine comparison). "x zoo" divides by the fraction of the limit that the issue
reports for the zoo's own train.py (9,300 samples/s at batch 1000 and 12,700 at 16000 on a
machine whose limit was 430 GFLOP/s: 50% and 69%). Figures only: nothing is asserted. Say
the load next to them (printed before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

ZOO_VOCAB = 184_965  # the zoo's Criteo vocabulary at threshold 100
ZOO_FIELDS = 39  # Criteo: 13 dense + 26 categorical
VARIANTS = (
    "zoo_ref_gk",
    "zoo_ref",
    "autodiff",
    "autodiff_gk",
    "zoo",
    "zoo_ms",
    "zoo_gk",
    "zoo_fp16",
    "lazy",
    "lazy_ms",
)
DEFAULT_VARIANTS = ("zoo_ref_gk", "zoo_ref", "autodiff", "zoo", "zoo_ms", "zoo_fp16", "lazy")
# The zoo's own train.py as the issue measured it: samples/s at a batch, and the limit then.
ZOO_REPORTED = {1000: 9_300, 16000: 12_700}
ZOO_LIMIT_FLOPS = 430e9


def mlp_layers(cfg) -> list[tuple[int, int]]:
    dims = [cfg.field_size * cfg.emb_dim, *cfg.deep_layers, 1]
    return list(zip(dims[:-1], dims[1:], strict=False))


def mlp_flops_per_sample(cfg) -> float:
    """Forward + backward (two products) of every dense layer: 3 x 2 x in x out."""
    return float(sum(6 * i * o for i, o in mlp_layers(cfg)))


def zoo_config():
    from deepfm_lib.config import ModelConfig

    zoo = yaml.safe_load((REPO / "params.yaml").read_text())["presets"]["zoo"]
    return ModelConfig(vocab_size=ZOO_VOCAB, field_size=ZOO_FIELDS, **zoo["model"]), zoo["train"]


# -- child processes ------------------------------------------------------------------------
def _load_batches(data_dir: Path, batch: int, count: int):
    from deepfm_lib.data.dataset import iter_batches

    out = []
    while len(out) < count:
        for ids, weights, labels in iter_batches(data_dir, "train", batch, shuffle=False, seed=0):
            if len(ids) == batch:
                out.append((ids, weights, labels))
            if len(out) == count:
                break
        if not out:
            raise SystemExit(f"{data_dir}: fewer than {batch} training rows; raise --rows")
    return out


def _child_step(variant: str, batch: int, steps: int, data_dir: Path) -> dict:
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    from deepfm_lib.engine.step import TrainStep
    from deepfm_lib.models.base import ModelWithLoss
    from deepfm_lib.models.deepfm import DeepFM

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    if variant.endswith("_gk"):
        ms.set_context(enable_graph_kernel=True)
    cfg, train = zoo_config()
    if variant == "zoo_fp16":
        cfg = type(cfg)(**{**cfg.__dict__, "precision": "fp16"})
    ms.set_seed(1001)
    lr, eps, scale = train["lr"], train["eps"], float(train["loss_scale"])
    if variant.startswith("zoo_ref"):
        from zoo_reference import zoo_train_step

        cell = zoo_train_step(cfg, lr, eps, scale)

        def step(ids, weights, labels, _mask):  # the zoo's step has no row mask
            return cell(ids, weights, labels)

    else:
        net = DeepFM(cfg)  # only here: the zoo graph builds its own tables (peak RSS)
        if variant.startswith("autodiff"):
            opt = nn.Adam(net.trainable_params(), learning_rate=lr, eps=eps, loss_scale=scale)
            cell = nn.TrainOneStepCell(ModelWithLoss(net), opt, sens=scale)
        else:
            fused = variant in ("zoo", "zoo_fp16", "lazy")
            lazy = variant.startswith("lazy")
            cell = TrainStep(net, lr, eps, loss_scale=scale, lazy_adam=lazy, fused=fused)
        step = cell
    cell.set_train(True)
    batches = _load_batches(data_dir, batch, min(steps + 2, 8))
    mask = np.ones((batch, 1), np.float32)

    def one(k: int) -> float:
        ids, weights, labels = batches[k % len(batches)]
        return float(step(Tensor(ids), Tensor(weights), Tensor(labels), Tensor(mask)).asnumpy())

    for k in range(2):  # compile, then one warm step
        one(k)
    losses, times, cpu = [], [], []
    for k in range(2, 2 + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        losses.append(one(k))
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    seconds = float(np.median(times))  # robust to a neighbour's burst on a shared machine
    if not all(np.isfinite(losses)):
        raise SystemExit(f"{variant} at batch {batch}: non-finite loss {losses}")
    return {
        "ms_per_step": 1000 * seconds,
        # CPU time (all threads) per step: the work done, less sensitive to neighbours.
        "cpu_ms_per_step": 1000 * float(np.median(cpu)),
        "samples_per_s": batch / seconds,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "last_loss": losses[-1],
    }


def _child_limit(batch: int, reps: int) -> dict:
    """fp32 MatMul FLOP/s at the MLP's forward and backward shapes for this batch."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn, ops

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    cfg, _ = zoo_config()

    class Product(nn.Cell):
        def __init__(self, ta: bool, tb: bool):
            super().__init__()
            self.matmul = ops.MatMul(transpose_a=ta, transpose_b=tb)

        def construct(self, a, b):
            # Hand back one element, not the product: copying a (16000, 3120) result to
            # the host took tens of ms and was counted as matmul time (a limit too low).
            return self.matmul(a, b)[:1, :1]

    rng = np.random.default_rng(0)
    total_flops = total_s = 0.0
    for i, o in mlp_layers(cfg):
        # forward X W; dX = dY W^T; dW = X^T dY
        for (ta, tb), a_shape, b_shape in (
            ((False, False), (batch, i), (i, o)),
            ((False, True), (batch, o), (i, o)),
            ((True, False), (batch, i), (batch, o)),
        ):
            a = Tensor(rng.random(a_shape, np.float32))
            b = Tensor(rng.random(b_shape, np.float32))
            cell = Product(ta, tb)
            cell(a, b).asnumpy()
            best = float("inf")
            for _ in range(reps):  # the best of reps: the limit is what the CPU can do
                start = time.perf_counter()
                cell(a, b).asnumpy()
                best = min(best, time.perf_counter() - start)
            total_s += best
            total_flops += 2.0 * batch * i * o
    return {"flops_per_s": total_flops / total_s, "mlp_matmul_ms": 1000 * total_s}


def _run_child(args: list[str]) -> dict:
    # In a scratch folder: graph-kernel builds leave logs and keys in the working directory.
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "_child", *args],
            capture_output=True,
            text=True,
            cwd=scratch,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, *rest = sys.argv[2:]
        if kind == "limit":
            out = _child_limit(int(rest[0]), int(rest[1]))
        else:
            out = _child_step(kind, int(rest[0]), int(rest[1]), Path(rest[2]))
        print(json.dumps(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1000, 16000])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=8, help="timed steps at batch 1000")
    parser.add_argument("--rows", type=int, default=150_000, help="synthetic rows to read")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats per batch")
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()

    from train_workers import DEFAULT_CACHE, prepare_data

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    data_dir = prepare_data(args.cache or DEFAULT_CACHE, base, args.rows)
    cfg, _ = zoo_config()
    flops = mlp_flops_per_sample(cfg)
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    print(f"zoo config: vocab {cfg.vocab_size:,}, MLP {flops / 1e6:.1f} MFLOP/sample")
    header = (
        f"{'variant':<12} {'batch':>6} {'ms/step':>8} {'CPU ms':>7} {'samples/s':>10} "
        f"{'peak RSS':>9} {'of limit':>8} {'x ' + args.variants[0]:>13} {'x zoo':>6}"
    )
    for batch in args.batches:
        steps = max(3, args.steps * 1000 // batch)
        runs: dict[str, list[dict]] = {v: [] for v in args.variants}
        ratios: dict[str, list[float]] = {v: [] for v in args.variants}
        best_limit = None
        # Rounds interleave the variants, so a neighbour's burst hits them alike; the
        # ratio to the first variant is taken within each round, then the median.
        for rnd in range(1, args.rounds + 1):
            limit = _run_child(["limit", str(batch), str(max(3, 20 * 1000 // batch))])
            if "error" in limit:
                raise SystemExit(f"matmul limit at batch {batch} failed: {limit['error']}")
            if best_limit is None or limit["flops_per_s"] > best_limit["flops_per_s"]:
                best_limit = limit
            line = []
            for variant in args.variants:
                r = _run_child([variant, str(batch), str(steps), str(data_dir)])
                if "error" in r:
                    print(f"{variant} at batch {batch} failed: {r['error'].splitlines()[-1]}")
                    continue
                runs[variant].append(r)
                first = runs[args.variants[0]]
                if first and len(first) == rnd:
                    ratios[variant].append(first[-1]["ms_per_step"] / r["ms_per_step"])
                line.append(f"{variant} {r['ms_per_step']:.0f}")
            print(f"batch {batch} round {rnd}: ms/step " + ", ".join(line), flush=True)
        limit = best_limit
        zoo_fraction = ZOO_REPORTED.get(batch, 0) * flops / ZOO_LIMIT_FLOPS
        print(
            f"\nbatch {batch}: fp32 MatMul limit {limit['flops_per_s'] / 1e9:.0f} GFLOP/s "
            f"(the MLP's products alone: {limit['mlp_matmul_ms']:.0f} ms/step, "
            f"{batch * 1000 / limit['mlp_matmul_ms']:,.0f} samples/s)"
            + (f"; zoo reported at {100 * zoo_fraction:.0f}% of its limit" if zoo_fraction else "")
            + f"; medians of {args.rounds} rounds"
        )
        print(header)
        for variant in args.variants:
            if not runs[variant]:
                continue
            ms = statistics.median(r["ms_per_step"] for r in runs[variant])
            cpu = statistics.median(r["cpu_ms_per_step"] for r in runs[variant])
            rss = max(r["peak_rss_gib"] for r in runs[variant])
            fraction = batch / ms * 1000 * flops / limit["flops_per_s"]
            vs_zoo = f"{fraction / zoo_fraction:>6.2f}" if zoo_fraction else f"{'-':>6}"
            vs_first = f"{statistics.median(ratios[variant]):>13.2f}" if ratios[variant] else ""
            print(
                f"{variant:<12} {batch:>6} {ms:>8.1f} {cpu:>7.0f} {batch / ms * 1000:>10,.0f} "
                f"{rss:>7.2f} G {100 * fraction:>7.0f}% {vs_first:>13} {vs_zoo}",
                flush=True,
            )
    print(f"\nload after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
