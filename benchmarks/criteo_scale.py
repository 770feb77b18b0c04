"""Preprocessing and training at the full Kaggle-Criteo size, measured instead of extrapolated.

    .venv/bin/python benchmarks/criteo_scale.py [--rows 45840617] [--compare-rows 5000000]
        [--protocols zoo clean] [--train-steps 200] [--cache DIR] [--clean]

Why: benchmarks/preprocess.py extrapolates the full file's memory from runs of a few
million rows; this script runs the real size. Synthetic Criteo-format text at the Kaggle
per-field cardinalities (deepfm_lib.data.synthetic, scale 1.0) is generated once into
--cache (default ~/.cache/deepfm-repro/criteo_scale; the generator builds in a temporary
folder and renames it, so a killed generation is never taken for a complete one) and reused
by later runs. About 11 GB of text at the default 45,840,617 rows; a full run needs ~35 GB
free in --cache (text, the preprocessing spill, one protocol's shards at a time).

Each protocol is preprocessed in a fresh child process, so its peak memory is its own:
wall and CPU seconds per phase (parse, split and vocabulary, MindRecord write; CPU of the
whole process tree, writer processes included), rows/s, peak memory (sum of PSS over the
process tree, sampled every 0.5 s: benchmarks/preprocess.py's tree_memory), disk of the raw
text and of the output (du), and the vocabulary size. With --compare-rows N (< --rows) the
same figures for the file's first N rows (the generator is prefix-stable, so this is the
same data), and the ratios full / N. Then the zoo preset (emb 80, MLP 1024-512-256-128,
batch 16000, Adam) trains --train-steps steps on the full-size zoo shards in a child
process, through the study's own train step (deepfm_lib.engine.step.TrainStep, as the train
stage builds it) fed by deepfm_lib.data.dataset.iter_batches: samples/s after warm-up, the
memory of the weights and Adam's two moments, peak memory, and the projected time of one
epoch and of the zoo's 5 on this machine, beside the zoo's published 8.16 ms per step on
Ascend 910.

The goals (full-size preprocessing within 5 minutes on 2 cores and 8 GiB of memory, output
no larger on disk than the raw text) are printed beside the figures as PASS or MISS; nothing
is asserted. The last line of output is a JSON summary. Everything the script and its
children write (temporary files, MindSpore's working-directory files, the compiled CPU
kernels) stays under --cache; --clean deletes that folder and exits.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # nothing written beside the sources either

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere


def _bench_preprocess() -> Any:
    """benchmarks/preprocess.py, loaded from its path: `import preprocess` would take any
    other module of that name found first on sys.path or already imported."""
    name = "_benchmarks_preprocess"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "preprocess.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_pp = _bench_preprocess()
CRITEO_ROWS: int = _pp.CRITEO_ROWS
SAMPLE_S: float = _pp.SAMPLE_S
tree_memory = _pp.tree_memory

SCALE = 1.0  # the Kaggle per-field cardinalities
ZOO_BATCH = 16_000
ZOO_ASCEND_MS_PER_STEP = 8.16  # the model zoo's README, DeepFM on one Ascend 910
# The README's training table gives that step time beside batch 1000 (its config says 16000):
# the projection uses 1000, and prints what 16000 rows per step would mean too.
ZOO_ASCEND_BATCH = 1_000
WARMUP_STEPS = 3  # compile, then steps until the data pipeline runs ahead
GOAL_WALL_S = 300.0
GOAL_MEMORY = 8 * 2**30
GOAL_CORES = 2
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / (
    "deepfm-repro/criteo_scale"
)
# Marks the folder as ours (--clean deletes only such a folder) and as a cache to backup tools.
CACHE_TAG = "CACHEDIR.TAG"
CACHE_TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# deepfm-repro benchmarks/criteo_scale.py cache: regenerated on demand; --clean removes it.\n"
)
# Per row, for the disk check before a run: MindRecord output and the preprocessing spill
# (label 1 + dense 13 x 8 + value indices 26 x 4 bytes), measured on smaller runs.
OUTPUT_BYTES_PER_ROW = 215
SPILL_BYTES_PER_ROW = 209
RAW_BYTES_PER_ROW = 260  # text ~243 plus the teacher's logits and parts


# ------------------------------------------------------------------------- small helpers


def gib(n: float) -> str:
    """Bytes in GiB, or MiB / KiB for small runs."""
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if abs(n) >= 2**shift:
            return f"{n / 2**shift:.2f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def du(path: Path) -> int:
    """Bytes allocated on disk under path (a file or a folder), like `du -s --bytes`
    but counting blocks; entries that vanish while walking are skipped."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return st.st_blocks * 512
    total = st.st_blocks * 512
    for root, dirs, files in os.walk(path, onerror=lambda _err: None):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def tree_cpu(proc: Any) -> float:
    """CPU seconds (user + system) of a process, its live descendants and the descendants
    each of them has reaped."""
    import psutil

    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


class Layout:
    """Where everything lives under the cache folder."""

    def __init__(self, cache: Path, seed: int, rows_per_record: int) -> None:
        self.cache = cache
        self.seed = seed
        self.rpr = rows_per_record
        self.work = cache / "work"  # children's working folder and TMPDIR
        self.xdg = cache / "xdg"  # children's XDG_CACHE_HOME (the compiled CPU kernels)

    def raw_dir(self, rows: int) -> Path:
        return self.cache / "raw" / f"rows{rows}-seed{self.seed}-scale{SCALE:g}"

    def prefix_file(self, rows: int) -> Path:
        """The first rows of a larger file (any: the generator is prefix-stable)."""
        return self.cache / "raw" / f"prefix{rows}-seed{self.seed}-scale{SCALE:g}" / "train.txt"

    def out_dir(self, protocol: str, rows: int) -> Path:
        tail = "" if self.rpr == 1000 else f"-rpr{self.rpr}"
        return self.cache / "runs" / f"{protocol}-rows{rows}{tail}"


def raw_complete(folder: Path, rows: int, seed: int) -> bool:
    """A finished generation: generator.json (written last, then the folder renamed into
    place) for these rows, seed and scale, and the text beside it."""
    meta = folder / "generator.json"
    if not (meta.is_file() and (folder / "train.txt").is_file()):
        return False
    info = json.loads(meta.read_text())
    return (
        info.get("rows") == rows
        and info.get("seed") == seed
        and info.get("settings", {}).get("scale") == SCALE
    )


def child_env(lay: Layout) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TMPDIR=str(lay.work),
        XDG_CACHE_HOME=str(lay.xdg),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    return env


def run_child(lay: Layout, mode: str, args: list[str], watch: Path | None = None) -> dict:
    """Run this script in --child mode in a fresh process; sample the memory of its process
    tree (and the disk under `watch`) every SAMPLE_S seconds. Its stdout and stderr pass
    through; it leaves its result as JSON in the work folder."""
    import psutil

    result = lay.work / f"{mode}-{time.time_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(result), *args]
    disk0 = du(watch) if watch is not None else 0
    peak_mem = peak_disk = 0
    proc = psutil.Popen(cmd, env=child_env(lay), cwd=lay.work)
    try:
        while proc.poll() is None:
            peak_mem = max(peak_mem, tree_memory(proc))
            if watch is not None:
                peak_disk = max(peak_disk, du(watch) - disk0)
            time.sleep(SAMPLE_S)
    except BaseException:
        for p in [*proc.children(recursive=True), proc]:
            try:
                p.kill()
            except psutil.Error:
                pass
        raise
    if proc.returncode != 0 or not result.is_file():
        how = (
            f"killed by signal {-proc.returncode} (out of memory?)"
            if proc.returncode < 0
            else f"exit {proc.returncode}"
        )
        raise SystemExit(
            f"criteo_scale: the {mode} child failed ({how}) after reaching {gib(peak_mem)} of "
            f"memory; its output is above"
        )
    out = json.loads(result.read_text())
    result.unlink()
    out["peak_memory_bytes"] = peak_mem
    if watch is not None:
        out["peak_disk_bytes"] = peak_disk
    return out


# ------------------------------------------------------------------------- children


def child_generate(result: Path, out_dir: str, rows: str, seed: str, progress: str) -> None:
    import psutil

    from deepfm_lib.data.synthetic import generate

    me = psutil.Process()
    c, t = tree_cpu(me), time.perf_counter()
    info = generate(
        Path(out_dir), rows=int(rows), seed=int(seed), scale=SCALE, progress=progress == "1"
    )
    result.write_text(
        json.dumps(
            {
                "wall_s": time.perf_counter() - t,
                "cpu_s": tree_cpu(me) - c,
                "positive_rate": info["positive_rate"],
            }
        )
    )


def child_preprocess(
    result: Path, raw: str, out: str, protocol: str, rows_per_record: str, progress: str
) -> None:
    """Preprocess once; wall and CPU seconds per phase.

    preprocess() fills `timings` with each phase's wall seconds as the phase ends; the dict
    given here also notes the process tree's CPU seconds at that moment, so a phase's CPU is
    the difference to the previous note (the first phase's includes the set-up before it).
    """
    import resource

    import psutil

    from deepfm_lib.config import PreprocessParams
    from deepfm_lib.data.preprocess import preprocess

    me = psutil.Process()

    class PhaseClock(dict):
        def __init__(self) -> None:
            super().__init__()
            self.cpu_at: dict[str, float] = {}

        def __setitem__(self, key: str, value: float) -> None:
            self.cpu_at[key] = tree_cpu(me)
            super().__setitem__(key, value)

    cfg = PreprocessParams(protocol=protocol, rows_per_record=int(rows_per_record))
    clock = PhaseClock()
    c0, t0 = tree_cpu(me), time.perf_counter()
    stats = preprocess(Path(raw), Path(out), cfg, progress=progress == "1", timings=clock)
    wall = time.perf_counter() - t0
    cpu = tree_cpu(me) - c0  # the writer processes are reaped by now: all in children_*
    phases: dict[str, dict[str, float]] = {}
    last_c, sum_wall = c0, 0.0
    for key, seconds in clock.items():
        name = key.removesuffix("_s")
        phases[name] = {"wall_s": seconds, "cpu_s": clock.cpu_at[key] - last_c}
        last_c = clock.cpu_at[key]
        sum_wall += seconds
    if phases:
        phases["other"] = {"wall_s": max(0.0, wall - sum_wall), "cpu_s": c0 + cpu - last_c}
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    result.write_text(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "phases": phases,
                "rows": stats["rows_read"],
                "lines": stats["lines_read"],
                "dropped_rows": stats["dropped_rows"],
                "vocab_size": stats["vocab_size"],
                "distinct_values": sum(stats["distinct_values_per_field"].values()),
                "splits": {k: v["rows"] for k, v in stats["splits"].items()},
                "max_rss_one_process_bytes": max(own, kids),
            }
        )
    )


def zoo_params(target: str, batch_size: int | None) -> Any:
    """params.yaml with preset zoo and no single-setting overrides (the zoo's figures)."""
    import yaml

    from deepfm_lib import config

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["preset"] = "zoo"
    raw["model"] = {}
    raw["train"] = {} if batch_size is None else {"batch_size": batch_size}
    for spec in raw.get("targets", {}).values():
        spec["train"] = {}
    # Only the settings matter here, not the study's data source (whose checks would need
    # the Kaggle file); relative paths are the repository's (children run in the cache).
    data = raw.setdefault("data", {})
    data["source"] = "synthetic"
    path = Path(data.get("criteo_path", "data/criteo"))
    data["criteo_path"] = str(path if path.is_absolute() else REPO / path)
    params = config.parse(raw, source=str(REPO / "params.yaml"))
    params.target(target)
    return params


def _batches(data_dir: Path, batch: int, seed: int) -> Iterator[tuple]:
    """Training batches, epoch after epoch, as the train stage reads them (shuffled)."""
    from deepfm_lib.data.dataset import iter_batches

    epoch = 0
    while True:
        got = False
        for b in iter_batches(data_dir, "train", batch, shuffle=True, seed=seed, epoch=epoch):
            got = True
            yield b
        if not got:
            raise SystemExit(f"{data_dir}: the train split is empty")
        epoch += 1


def child_train(
    result: Path, data_dir: str, steps: str, batch_size: str, target: str, progress: str
) -> None:
    """A bounded loop of the study's train step on the real shards; per-step timings."""
    import resource

    import numpy as np

    from deepfm_lib.engine.device import use_device

    params = zoo_params(target, int(batch_size) or None)
    use_device(params.target(target).device)

    import mindspore as ms
    from mindspore import Tensor

    from deepfm_lib.engine.inference import pad_batch
    from deepfm_lib.engine.kernels import use_fused
    from deepfm_lib.engine.step import TrainStep
    from deepfm_lib.models import build
    from deepfm_lib.models.base import count_parameters

    data = Path(data_dir)
    stats = json.loads((data / "stats.json").read_text())
    seed = params.seeds(target)[0]
    model_cfg = params.network_config("deepfm", target, stats["vocab_size"], stats["data"]["width"])
    cfg = params.train_config(target, seed)
    # What deepfm_lib.engine.trainer's _Run builds for one process.
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(seed)
    np.random.seed(seed)
    net = build(model_cfg)
    fused = use_fused(cfg.kernels, ms.get_context("device_target"), net)
    step = TrainStep(
        net, lr=cfg.lr, eps=cfg.eps, loss_scale=cfg.loss_scale, lazy_adam=cfg.lazy_adam, fused=fused
    )
    step.set_train(True)
    n_params = count_parameters(net)
    table_params = int(sum(t.size for t in net.tables()))

    n_steps = int(steps)
    warm = min(WARMUP_STEPS, n_steps - 1)
    it = _batches(data, cfg.batch_size, seed)
    fetch_s, step_s, rows, losses = [], [], [], []
    for k in range(n_steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        (ids, weights, labels), mask, n = pad_batch(batch, cfg.batch_size)
        out = step(Tensor(ids), Tensor(weights), Tensor(labels), Tensor(mask))
        losses.append(float(out.asnumpy()))
        t2 = time.perf_counter()
        fetch_s.append(t1 - t0)
        step_s.append(t2 - t1)
        rows.append(n)
        if progress == "1" and (k + 1) % 10 == 0:
            print(f"  step {k + 1}/{n_steps}: {1000 * (t2 - t1):.0f} ms", file=sys.stderr)
    timed = slice(warm, n_steps)
    timed_s = float(np.sum(fetch_s[timed]) + np.sum(step_s[timed]))
    result.write_text(
        json.dumps(
            {
                "batch_size": cfg.batch_size,
                "emb_dim": model_cfg.emb_dim,
                "deep_layers": list(model_cfg.deep_layers),
                "vocab_size": model_cfg.vocab_size,
                "kernels": "fused CPU kernels" if fused else "MindSpore's",
                "parameters": n_params,
                "table_parameters": table_params,
                "steps": n_steps,
                "warmup_steps": warm,
                "first_step_s": step_s[0],
                "timed_rows": int(np.sum(rows[timed])),
                "timed_s": timed_s,
                "samples_per_s": float(np.sum(rows[timed])) / timed_s,
                "ms_per_step_median": 1000 * float(np.median(step_s[timed])),
                "fetch_ms_per_step_median": 1000 * float(np.median(fetch_s[timed])),
                "first_loss": losses[0],
                "last_loss": losses[-1],
                "losses_finite": bool(np.all(np.isfinite(losses))),
                "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


CHILDREN = {"generate": child_generate, "preprocess": child_preprocess, "train": child_train}


# ------------------------------------------------------------------------- main steps


def prepare_cache(cache: Path) -> None:
    if cache.exists() and not (cache / CACHE_TAG).is_file() and any(cache.iterdir()):
        raise SystemExit(
            f"criteo_scale: {cache} exists, is not empty and is not this script's cache (no "
            f"{CACHE_TAG}); choose another --cache"
        )
    cache.mkdir(parents=True, exist_ok=True)
    (cache / CACHE_TAG).write_text(CACHE_TAG_TEXT)


def clean(cache: Path) -> None:
    if not cache.exists():
        print(f"{cache}: nothing to remove")
        return
    if not (cache / CACHE_TAG).is_file() and any(cache.iterdir()):
        raise SystemExit(
            f"criteo_scale: {cache} has no {CACHE_TAG}: not this script's cache; not removing it"
        )
    size = du(cache)
    shutil.rmtree(cache)
    print(f"removed {cache} ({gib(size)})")


def check_disk(lay: Layout, rows: int, compare: int, protocols: list[str], keep: bool) -> None:
    need = 0 if raw_complete(lay.raw_dir(rows), rows, lay.seed) else RAW_BYTES_PER_ROW * rows
    per_run = (SPILL_BYTES_PER_ROW + OUTPUT_BYTES_PER_ROW) * rows
    kept = OUTPUT_BYTES_PER_ROW * rows * (len(protocols) - 1 if keep else 0)
    need += (per_run + kept if protocols else 0) + (243 * compare if compare else 0)
    free = shutil.disk_usage(lay.cache).free
    print(f"disk: ~{gib(need)} needed in {lay.cache} (estimate), {gib(free)} free")
    if need > free:
        print(f"WARNING: {lay.cache} may run out of space; choose another --cache or fewer --rows")


def raw_text(lay: Layout, rows: int, progress: bool) -> tuple[Path, dict]:
    folder = lay.raw_dir(rows)
    if raw_complete(folder, rows, lay.seed):
        print(f"raw text: reusing {folder / 'train.txt'}")
        return folder / "train.txt", {"generated": False}
    print(f"raw text: generating {rows:,} rows at scale {SCALE:g} into {folder} ...", flush=True)
    gen = run_child(
        lay, "generate", [str(folder), str(rows), str(lay.seed), str(int(progress))], folder.parent
    )
    print(
        f"  generated in {gen['wall_s']:.1f}s wall, {gen['cpu_s']:.1f}s CPU, peak memory "
        f"{gib(gen['peak_memory_bytes'])}, positive rate {gen['positive_rate']:.4f}"
    )
    return folder / "train.txt", {"generated": True, **gen}


def prefix_text(lay: Layout, src: Path, rows: int) -> Path:
    """The first `rows` lines of `src` (the same rows a generation of that size would give)."""
    import numpy as np

    from deepfm_lib.io import atomic_path

    whole = lay.raw_dir(rows)
    if raw_complete(whole, rows, lay.seed):
        return whole / "train.txt"
    dst = lay.prefix_file(rows)
    if dst.is_file():  # renamed into place only when complete
        print(f"prefix: reusing {dst}")
        return dst
    print(f"prefix: copying the first {rows:,} lines of {src} ...", flush=True)
    with atomic_path(dst) as tmp, open(src, "rb") as fin, open(tmp, "wb") as fout:
        left = rows
        while left:
            chunk = fin.read(1 << 24)
            if not chunk:
                raise SystemExit(f"criteo_scale: {src} has fewer than {rows:,} lines")
            ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord("\n"))
            if len(ends) >= left:
                fout.write(chunk[: ends[left - 1] + 1])
                left = 0
            else:
                fout.write(chunk)
                left -= len(ends)
    return dst


def preprocess_run(
    lay: Layout, raw: Path, rows: int, protocol: str, progress: bool, keep: bool
) -> dict:
    out = lay.out_dir(protocol, rows)
    shutil.rmtree(out, ignore_errors=True)  # measured afresh; an old copy would double the disk
    print(f"preprocess {protocol} on {rows:,} rows -> {out} ...", flush=True)
    r = run_child(
        lay,
        "preprocess",
        [str(raw), str(out), protocol, str(lay.rpr), str(int(progress))],
        out.parent,
    )
    r["output_disk_bytes"] = du(out)
    r["rows_per_s"] = r["rows"] / r["wall_s"]
    r["output_dir"] = str(out)
    r["kept"] = keep
    if not keep:
        shutil.rmtree(out)
    return r


def print_preprocess(rows: int, protocol: str, r: dict, raw_disk: int) -> None:
    phases = ", ".join(
        f"{name} {p['wall_s']:.1f}s wall / {p['cpu_s']:.1f}s CPU" for name, p in r["phases"].items()
    )
    print(
        f"  {protocol} at {rows:,} rows: {r['wall_s']:.1f}s wall, {r['cpu_s']:.1f}s CPU "
        f"(process tree), {r['rows_per_s']:,.0f} rows/s\n"
        f"    phases: {phases}\n"
        f"    peak memory {gib(r['peak_memory_bytes'])} (PSS, process tree; largest single "
        f"process {gib(r['max_rss_one_process_bytes'])} RSS)\n"
        f"    disk: output {gib(r['output_disk_bytes'])} "
        f"({r['output_disk_bytes'] / rows:.0f} B/row, "
        f"x{r['output_disk_bytes'] / raw_disk:.2f} the raw text), peak while running "
        f"{gib(r['peak_disk_bytes'])} (spill + output)\n"
        f"    vocabulary {r['vocab_size']:,} ids ({r['distinct_values']:,} distinct values); "
        f"splits {r['splits']}; dropped rows {r['dropped_rows']:,}",
        flush=True,
    )


def ratios(
    full: dict, small: dict, rows: int, small_rows: int
) -> dict[str, dict[str, float | None]]:
    """full / small for each figure, in total and per row (None where small's is 0)."""
    rows_ratio = rows / small_rows
    out: dict[str, dict[str, float | None]] = {}
    for name, key in (
        ("wall_s", "wall_s"),
        ("cpu_s", "cpu_s"),
        ("peak_memory", "peak_memory_bytes"),
        ("output_disk", "output_disk_bytes"),
    ):
        v = full[key] / small[key] if small[key] else None
        out[name] = {"total": v, "per_row": None if v is None else v / rows_ratio}
    out["rows"] = {"total": rows_ratio, "per_row": 1.0}
    return out


def train_run(
    lay: Layout, data_dir: Path, steps: int, batch: int | None, target: str, progress: bool
) -> dict:
    print(f"train: zoo preset, {steps} steps on {data_dir} ...", flush=True)
    r = run_child(
        lay, "train", [str(data_dir), str(steps), str(batch or 0), target, str(int(progress))]
    )
    stats = json.loads((data_dir / "stats.json").read_text())
    train_rows = stats["splits"]["train"]["rows"]
    bs = r["batch_size"]
    r["train_rows"] = train_rows
    r["state_bytes"] = r["parameters"] * 4 * 3
    r["table_state_bytes"] = r["table_parameters"] * 4 * 3
    r["steps_per_epoch"] = math.ceil(train_rows / bs)
    r["epoch_s"] = train_rows / r["samples_per_s"]
    r["epochs"] = zoo_epochs()
    r["zoo_epochs_s"] = r["epoch_s"] * r["epochs"]
    r["ascend_steps_per_epoch"] = math.ceil(train_rows / ZOO_ASCEND_BATCH)
    r["ascend_epoch_s"] = r["ascend_steps_per_epoch"] * ZOO_ASCEND_MS_PER_STEP / 1000
    r["ascend_zoo_epochs_s"] = r["ascend_epoch_s"] * r["epochs"]
    r["ascend_samples_per_s"] = ZOO_ASCEND_BATCH / (ZOO_ASCEND_MS_PER_STEP / 1000)
    r["ascend_epoch_s_at_zoo_batch"] = (
        math.ceil(train_rows / ZOO_BATCH) * ZOO_ASCEND_MS_PER_STEP / 1000
    )
    return r


def zoo_epochs() -> int:
    import yaml

    return int(
        yaml.safe_load((REPO / "params.yaml").read_text())["presets"]["zoo"]["train"]["epochs"]
    )


def hours(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


def print_train(r: dict) -> None:
    timed = r["steps"] - r["warmup_steps"]
    print(
        f"  model: DeepFM emb {r['emb_dim']}, MLP {'-'.join(map(str, r['deep_layers']))}, "
        f"vocab {r['vocab_size']:,}, batch {r['batch_size']:,}, {r['kernels']}\n"
        f"  {r['samples_per_s']:,.0f} samples/s over {timed} step{'s' * (timed != 1)} after "
        f"{r['warmup_steps']} warm-up (step {r['ms_per_step_median']:.0f} ms median + batch "
        f"{r['fetch_ms_per_step_median']:.0f} ms; first step {r['first_step_s']:.1f}s with "
        f"compile); loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}"
        + ("" if r["losses_finite"] else " (NON-FINITE)")
        + "\n"
        f"  weights + Adam's two moments (fp32, x3): {gib(r['state_bytes'])} for "
        f"{r['parameters']:,} parameters, of which the tables {gib(r['table_state_bytes'])} "
        f"({r['table_parameters']:,})\n"
        f"  peak memory {gib(r['peak_memory_bytes'])} (PSS, process tree), "
        f"{gib(r['max_rss_bytes'])} max RSS\n"
        f"  projected on this machine: one epoch ({r['train_rows']:,} rows, "
        f"{r['steps_per_epoch']:,} steps) {hours(r['epoch_s'])}, the zoo's {r['epochs']} epochs "
        f"{hours(r['zoo_epochs_s'])}\n"
        f"  the zoo on Ascend 910 at {ZOO_ASCEND_MS_PER_STEP} ms/step with its README's batch "
        f"{ZOO_ASCEND_BATCH:,} ({r['ascend_samples_per_s']:,.0f} samples/s): one epoch "
        f"({r['ascend_steps_per_epoch']:,} steps) {hours(r['ascend_epoch_s'])}, "
        f"{r['epochs']} epochs {hours(r['ascend_zoo_epochs_s'])} "
        f"(x{r['epoch_s'] / r['ascend_epoch_s']:.0f} this machine); were it per step of "
        f"{ZOO_BATCH:,} rows: one epoch {hours(r['ascend_epoch_s_at_zoo_batch'])}",
        flush=True,
    )


def goals(rows: int, pre: dict[str, dict], raw_disk: int) -> list[dict]:
    full = rows == CRITEO_ROWS
    cores = os.cpu_count() or 1
    out = []
    for protocol, r in pre.items():
        for name, value, limit in (
            ("wall_s", r["wall_s"], GOAL_WALL_S),
            ("peak_memory_bytes", r["peak_memory_bytes"], GOAL_MEMORY),
            ("output_disk_bytes", r["output_disk_bytes"], raw_disk),
        ):
            out.append(
                {
                    "protocol": protocol,
                    "goal": name,
                    "value": value,
                    "limit": limit,
                    "status": "PASS" if value <= limit else "MISS",
                    "full_size": full,
                    "cores": cores,
                }
            )
    return out


def print_goals(gs: list[dict], rows: int) -> None:
    note = "" if rows == CRITEO_ROWS else f"  (run at {rows:,} rows, not the full size)"
    cores = os.cpu_count() or 1
    core_note = "" if cores == GOAL_CORES else f" (this machine has {cores} cores)"
    print(f"goals{note}:")
    for g in gs:
        if g["goal"] == "wall_s":
            what = f"preprocessing within {GOAL_WALL_S / 60:.0f} min on {GOAL_CORES} cores"
            what += f"{core_note}: {g['value']:.1f}s"
        elif g["goal"] == "peak_memory_bytes":
            what = f"peak memory within {gib(GOAL_MEMORY)}: {gib(g['value'])}"
        else:
            what = (
                f"processed data no larger than the raw text: {gib(g['value'])} vs "
                f"{gib(g['limit'])}"
            )
        print(f"  {g['status']}  {g['protocol']:<5} {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=CRITEO_ROWS, help="rows of synthetic text")
    ap.add_argument(
        "--compare-rows",
        type=int,
        default=5_000_000,
        help="also measure the first N rows and print full/N ratios (0: skip)",
    )
    ap.add_argument(
        "--protocols",
        nargs="*",
        default=["zoo", "clean"],
        choices=["zoo", "clean"],
        help="preprocessing protocols to measure (none: train on the cached zoo output)",
    )
    ap.add_argument("--train-steps", type=int, default=200, help="0: no training")
    ap.add_argument(
        "--batch-size", type=int, default=None, help="training batch (default: the zoo's 16000)"
    )
    ap.add_argument("--target", default="CPU", help="params.yaml target to train on")
    ap.add_argument(
        "--rows-per-record",
        type=int,
        default=1000,
        help="rows per MindRecord record (the zoo's 1000; smaller only for smoke runs)",
    )
    ap.add_argument("--seed", type=int, default=2020, help="generator seed")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument(
        "--keep-outputs",
        action="store_true",
        help="keep every preprocessed output (default: only the full-size zoo shards)",
    )
    ap.add_argument("--clean", action="store_true", help="remove --cache and exit")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, result, *rest = args.child
        CHILDREN[mode](Path(result), *rest)
        return
    cache = args.cache.expanduser().resolve()
    if args.clean:
        clean(cache)
        return
    if args.rows < 1 or args.compare_rows < 0 or args.train_steps < 0:
        ap.error("--rows must be positive, --compare-rows and --train-steps not negative")
    protocols = sorted(dict.fromkeys(args.protocols), key=lambda p: p == "zoo")  # zoo last
    compare = args.compare_rows if 0 < args.compare_rows < args.rows else 0
    progress = sys.stderr.isatty()

    prepare_cache(cache)
    lay = Layout(cache, args.seed, args.rows_per_record)
    train_dir = lay.out_dir("zoo", args.rows)
    if args.train_steps and "zoo" not in protocols and not (train_dir / "stats.json").is_file():
        raise SystemExit(
            f"criteo_scale: no zoo output at {train_dir} to train on; include zoo in --protocols"
        )
    shutil.rmtree(lay.work, ignore_errors=True)
    lay.work.mkdir()
    lay.xdg.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(lay.work)  # this process's temporary files too
    print(f"cache: {cache}")
    print(f"machine: {os.cpu_count()} CPUs, load average at start {load_average()}")
    # This run's outputs are measured afresh: old copies would only take disk meanwhile.
    for protocol in protocols:
        for rows in (args.rows, compare) if compare else (args.rows,):
            shutil.rmtree(lay.out_dir(protocol, rows), ignore_errors=True)
    check_disk(lay, args.rows, compare, protocols, args.keep_outputs)

    summary: dict[str, Any] = {
        "rows": args.rows,
        "seed": args.seed,
        "scale": SCALE,
        "cache": str(cache),
        "cpus": os.cpu_count(),
        "protocols": protocols,
        "compare": None,
    }
    raw, gen = raw_text(lay, args.rows, progress)
    raw_disk = du(raw)
    summary["raw"] = {
        "path": str(raw),
        "bytes": raw.stat().st_size,
        "disk_bytes": raw_disk,
        "folder_disk_bytes": du(raw.parent),
        **gen,
    }
    print(
        f"raw text: {gib(raw.stat().st_size)} ({raw.stat().st_size / args.rows:.0f} B/row), "
        f"{gib(raw_disk)} on disk; with the teacher's files {gib(du(raw.parent))}"
    )

    if compare and protocols:
        small = prefix_text(lay, raw, compare)
        small_disk = du(small)
        summary["compare"] = {"rows": compare, "raw_disk_bytes": small_disk, "preprocess": {}}
        print(f"\n== the first {compare:,} rows ({gib(small_disk)} of text)")
        for protocol in protocols:
            r = preprocess_run(lay, small, compare, protocol, progress, args.keep_outputs)
            summary["compare"]["preprocess"][protocol] = r
            print_preprocess(compare, protocol, r, small_disk)

    pre: dict[str, dict] = {}
    if protocols:
        print(f"\n== all {args.rows:,} rows ({gib(raw_disk)} of text)")
    for protocol in protocols:
        keep = args.keep_outputs or (protocol == "zoo" and args.train_steps > 0)
        r = preprocess_run(lay, raw, args.rows, protocol, progress, keep)
        pre[protocol] = r
        print_preprocess(args.rows, protocol, r, raw_disk)
    summary["preprocess"] = pre

    if compare and pre:
        cmp = summary["compare"]
        cmp["ratio"] = {p: ratios(pre[p], cmp["preprocess"][p], args.rows, compare) for p in pre}
        cmp["ratio_raw_disk"] = raw_disk / cmp["raw_disk_bytes"]
        print(f"\n== scaling, {args.rows:,} rows / {compare:,} rows (x{args.rows / compare:.2f})")
        for p, rr in cmp["ratio"].items():
            print(
                f"  {p:<5} "
                + ", ".join(
                    f"{k} x{v['total']:.2f} (per row x{v['per_row']:.2f})"
                    if v["total"] is not None
                    else f"{k} n/a"
                    for k, v in rr.items()
                    if k != "rows"
                )
            )
        print(f"  raw text x{cmp['ratio_raw_disk']:.2f}")

    summary["train"] = None
    if args.train_steps:
        print("\n== training")
        t = train_run(lay, train_dir, args.train_steps, args.batch_size, args.target, progress)
        summary["train"] = t
        print_train(t)

    summary["goals"] = goals(args.rows, pre, raw_disk)
    print()
    print_goals(summary["goals"], args.rows)
    print(f"load average at end: {load_average()}")
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
