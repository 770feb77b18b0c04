"""MovieLens-100K preprocessing time and memory: the three files -> MindRecord shards.

    .venv/bin/python benchmarks/movielens.py [--rounds 3]

Reads the pinned wheel from the cache (python -m deepfm_lib.data.movielens fetch); without
it, generated files of the same format and size (100,000 ratings) stand in, and the output
says so. Each round runs in this process after one warm-up (MindSpore's import is paid
once). The baseline, run in the same rounds, only reads the three files and splits their
lines (no checks, no ids, nothing written): the ratio says what the checks, the encoding
and the MindRecord writing cost on top of reading. The target: well under 10 s. Figures
only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere
sys.path.insert(0, str(REPO / "tests"))  # the fake files' generator


def _source(tmp: Path) -> tuple[Path, str]:
    from deepfm_lib.data import movielens

    wheel = movielens.cache_dir() / movielens.WHEEL
    if wheel.is_file():
        return wheel, "the pinned wheel (real MovieLens-100K)"
    import fake_movielens

    folder = fake_movielens.write(tmp / "fake", users=943, items=1682, ratings=100_000)
    return folder, "generated files of MovieLens's format (the wheel is not cached)"


def _read_only(source: Path) -> int:
    """The baseline: the three files' lines, split at tabs, nothing more."""
    from deepfm_lib.data import movielens

    texts = movielens._texts(source)
    return sum(len([ln.split("\t") for ln in text.splitlines()]) for _, text in texts.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/movielens.py")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from deepfm_lib.config import MovieLensParams, PreprocessParams
    from deepfm_lib.data import movielens

    cfg = PreprocessParams(protocol="clean")
    with tempfile.TemporaryDirectory(prefix="bench-ml-") as tmp_name:
        tmp = Path(tmp_name)
        source, what = _source(tmp)
        movielens.preprocess(source, tmp / "warm", MovieLensParams(), cfg)  # imports, caches
        base, full = [], []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            _read_only(source)
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            stats = movielens.preprocess(source, tmp / f"out{r}", MovieLensParams(), cfg)
            full.append(time.perf_counter() - t0)
    rows = stats["rows_read"]
    b, f = statistics.median(base), statistics.median(full)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"source: {what}")
    print(f"ratings: {rows:,}; rounds: {args.rounds} (median)")
    print(f"baseline (read and split lines): {b:.3f} s, {rows / b:,.0f} rows/s")
    print(f"preprocess (checks, ids, MindRecord): {f:.3f} s, {rows / f:,.0f} rows/s")
    print(f"ratio preprocess / baseline: {f / b:.1f}x")
    print(f"peak RSS of this process: {peak:,.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
