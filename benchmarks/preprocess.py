"""Preprocessing throughput and memory: raw Criteo-format text -> finished MindRecord shards.

    .venv/bin/python benchmarks/preprocess.py [--rows 1000000 5000000] [--protocol zoo]
        [--rounds 3]

Synthetic text is generated once per size under --cache (default
~/.cache/deepfm-repro/benchmarks) and reused. Each size is preprocessed in a fresh child
process, so its peak memory is its own. A baseline is measured on the same file: a
plain line-by-line Python parse of --baseline-rows rows, nothing written. Memory is the
sum of PSS (proportional set size) over the process tree, sampled every SAMPLE_S seconds
(each sample costs the kernel ~25 ms of CPU at 1 GB, walking page tables, taken from the
cores the measured run uses: at 0.1 s that slowed the run by ~5%). CPU is the
user + system time of the preprocessing process and its children (the MindSpore import of the
writer process included): on a shared machine it varies less than the wall time. The full-Criteo
memory estimate extrapolates the measured peaks linearly in rows and adds the cost of
Criteo's ~33.8M distinct categorical values at the per-value cost measured here.
A floor is measured too: the CPU time of polars' parse and MindRecord's writer alone on the
same rows (see floor_child); their sum bounds what any pipeline built on them can reach.
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from cache_key import data_key

SAMPLE_S = 0.5
CRITEO_ROWS = 45_840_617
CRITEO_DISTINCT = 33_762_577  # sum of the Kaggle per-field cardinalities (C1..C26)
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "deepfm-repro/benchmarks"
)


def synthetic_file(cache: Path, rows: int, seed: int) -> Path:
    from deepfm_lib.data.synthetic import generate
    from deepfm_lib.io import atomic_path

    folder = cache / f"synthetic_{rows}_{data_key({'rows': rows, 'seed': seed})}"
    if (folder / "train.txt").is_file():
        print(f"reusing {folder}")
    else:
        print(f"generating {rows:,} rows into {folder} ...", flush=True)
        t = time.perf_counter()
        with atomic_path(folder) as tmp:  # complete, or not there at all
            generate(tmp, rows, seed=seed, progress=False)
        print(f"  generated in {time.perf_counter() - t:.1f}s")
    return folder / "train.txt"


def baseline_rows_per_s(path: Path, rows: int) -> float:
    """The simplest correct parse: split each line, int() the dense, int(h, 16) the hashes."""
    t = time.perf_counter()
    n = 0
    with open(path) as fh:
        for line in fh:
            f = line.rstrip("\n").split("\t")
            _ = (
                int(f[0]),
                [int(v) if v else None for v in f[1:14]],
                [int(v, 16) if v else None for v in f[14:]],
            )
            n += 1
            if n == rows:
                break
    return n / (time.perf_counter() - t)


def child(raw: str, out: str, protocol: str) -> None:
    """Runs in the child process: preprocess once, print the timing as JSON."""
    import resource

    from deepfm_lib.config import PreprocessParams
    from deepfm_lib.data.preprocess import preprocess

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    c, t = cpu(), time.perf_counter()
    phases: dict[str, float] = {}
    stats = preprocess(
        Path(raw), Path(out), PreprocessParams(protocol=protocol), progress=False, timings=phases
    )
    wall = time.perf_counter() - t
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu() - c,
                "rows": stats["rows_read"],
                "distinct": sum(stats["distinct_values_per_field"].values()),
                "phases": phases,
            }
        )
    )


def floor_child(raw: str) -> None:
    """Runs in a child: CPU-seconds of the two library calls any run must make, alone.

    1. polars parses the whole file with the schema the reader uses (its best case: one
       call, no validation, no hashing of values into ids);
    2. MindRecord's FileWriter writes as many rows, in the pipeline's records (rows_per_record
       rows each, the pipeline's schema, as many records per call), from ready arrays.
    The sum is a floor for the pipeline's CPU per row on this machine.
    """
    import resource

    from mindspore.mindrecord import FileWriter

    from deepfm_lib.config import PreprocessParams
    from deepfm_lib.data.criteo import N_DENSE, N_FIELDS, polars_frame
    from deepfm_lib.data.dataset import SCHEMA, encode_record
    from deepfm_lib.data.preprocess import _RECORDS_PER_WRITE

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime

    c = cpu()
    rows = polars_frame(raw).height
    parse_cpu = cpu() - c

    per = PreprocessParams().rows_per_record
    rng = np.random.default_rng(0)
    blob = encode_record(
        rng.integers(0, 200_000, (per, N_FIELDS), dtype="<i4"),
        rng.random((per, N_DENSE), dtype=np.float32),
        (rng.random(per) < 0.25).astype(np.float32),
    )
    n_records = rows // per
    with tempfile.TemporaryDirectory(prefix="bench-floor-", dir=Path(raw).parent) as tmp:
        writer = FileWriter(str(Path(tmp) / "floor.mindrecord"), 1)
        writer.add_schema(SCHEMA, "CRITEO")
        c = cpu()
        for start in range(0, n_records, _RECORDS_PER_WRITE):
            count = min(_RECORDS_PER_WRITE, n_records - start)
            writer.write_raw_data([{"record": blob}] * count)
        writer.commit()
        write_cpu = cpu() - c
    print(json.dumps({"rows": rows, "parse_cpu_s": parse_cpu, "write_cpu_s": write_cpu}))


def tree_memory(proc: psutil.Process) -> int:
    """Sum of PSS over the process tree (RSS where PSS is unavailable).

    PSS, not RSS: the writer processes are forked and share the parent's pages, which a
    sum of RSS would count once per process.
    """
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total


def measure(raw: Path, protocol: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-pp-", dir=raw.parent) as tmp:
        cmd = [sys.executable, __file__, "--child", str(raw), str(Path(tmp) / "out"), protocol]
        proc = psutil.Popen(cmd, stdout=subprocess.PIPE, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_memory(proc))
            time.sleep(SAMPLE_S)
        out = proc.stdout.read()
        if proc.returncode != 0:
            raise RuntimeError(f"child failed ({proc.returncode})")
        result = json.loads(out.strip().splitlines()[-1])
    result["peak_tree_rss"] = peak
    return result


def bytes_per_distinct_value(n: int = 2_000_000) -> float:
    """Memory per distinct categorical value: dictionary entry + count + id."""
    from pandas._libs.hashtable import Int64Factorizer

    proc = psutil.Process()
    before = proc.memory_info().rss
    fac = Int64Factorizer(1024)
    keys = np.random.default_rng(0).permutation(n).astype(np.int64)
    fac.factorize(keys)
    del keys
    grown = proc.memory_info().rss - before
    return grown / n + 8 + 4  # int64 count and int32 id per value in the vocabulary step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--protocol", default="zoo", choices=["zoo", "clean"])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--baseline-rows", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3, help="runs per size (median printed)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--floor-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.floor_child:
        floor_child(args.floor_child)
        return

    print(f"cache: {args.cache}")
    print(
        f"machine: {os.cpu_count()} CPUs, load average at start "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    args.cache.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in args.rows:
        raw = synthetic_file(args.cache, rows, args.seed)
        base = baseline_rows_per_s(raw, args.baseline_rows)
        runs = [measure(raw, args.protocol) for _ in range(args.rounds)]
        # The median run by wall time; the machine is shared, so the spread is printed too.
        r = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
        r.update(rows_target=rows, baseline=base, rows_per_s=r["rows"] / r["wall_s"])
        r["peak_tree_rss"] = max(run["peak_tree_rss"] for run in runs)
        results.append(r)
        spread = ", ".join(f"{run['wall_s']:.1f}" for run in runs)
        print(
            f"{rows:>11,} rows  {args.protocol}: {r['rows_per_s']:>9,.0f} rows/s end to end "
            f"(median of {len(runs)} runs: {r['wall_s']:.1f}s; runs {spread}s), peak memory "
            f"{r['peak_tree_rss'] / 2**30:.2f} GiB (PSS, process tree); CPU {r['cpu_s']:.1f}s "
            f"over all processes ({r['rows'] / r['cpu_s']:,.0f} rows per CPU-second); "
            f"baseline line-by-line parse only {base:,.0f} rows/s -> "
            f"x{r['rows_per_s'] / base:.1f}; phases "
            + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in r["phases"].items()),
            flush=True,
        )
    # The floor: what polars' parse and MindRecord's writer cost alone, on the first size.
    raw = synthetic_file(args.cache, args.rows[0], args.seed)
    out = subprocess.run(
        [sys.executable, __file__, "--floor-child", str(raw)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    floor = json.loads(out.strip().splitlines()[-1])
    per_m = 1e6 / floor["rows"]
    total = (floor["parse_cpu_s"] + floor["write_cpu_s"]) * per_m
    measured = results[0]["cpu_s"] / results[0]["rows"] * 1e6
    cores = os.cpu_count() or 1
    print(
        f"floor on {floor['rows']:,} rows, CPU-s per 1M rows: polars parse alone "
        f"{floor['parse_cpu_s'] * per_m:.2f} + MindRecord write alone "
        f"{floor['write_cpu_s'] * per_m:.2f} = {total:.2f} (the pipeline: {measured:.2f}, "
        f"x{measured / total:.2f} the floor); at that floor {cores} cores could do at most "
        f"{cores / total * 1e6:,.0f} rows/s"
    )
    if len(results) >= 2:
        (a, b) = results[0], results[-1]
        slope = (b["peak_tree_rss"] - a["peak_tree_rss"]) / (b["rows"] - a["rows"])
        at_criteo = b["peak_tree_rss"] + slope * (CRITEO_ROWS - b["rows"])
        per_value = bytes_per_distinct_value()
        extra = per_value * max(0, CRITEO_DISTINCT - b["distinct"])
        print(
            f"estimate for the full Criteo file ({CRITEO_ROWS:,} rows, ~{CRITEO_DISTINCT:,} "
            f"distinct values): {(at_criteo + extra) / 2**30:.1f} GiB "
            f"(rows: {slope:.0f} B/row, values: {per_value:.0f} B/value)"
        )
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
