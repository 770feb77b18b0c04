"""benchmarks/criteo_scale.py end to end on a few thousand rows: figures, not timings.

The script is meant for the full 45.8M-row file; here it runs the same path on 5,000 rows
(2,000 for the comparison, records of 100 rows so every split has some, 3 training steps
of 500 rows) and the test checks what it prints, that it writes nowhere but its --cache
folder, and that --clean removes that folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "criteo_scale.py"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir())


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The script with HOME, TMPDIR and the working folder of its own, to see what it
    writes outside --cache."""
    env = dict(os.environ)
    env.pop("XDG_CACHE_HOME", None)
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"))
    for name in ("home", "tmp", "cwd"):
        (tmp_path / name).mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path / "cwd",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_scale_benchmark_smoke_run_and_clean(tmp_path):
    cache = tmp_path / "cache"
    started = time.time()
    proc = _run(
        [
            "--rows",
            "5000",
            "--compare-rows",
            "2000",
            "--train-steps",
            "3",
            "--batch-size",
            "500",
            "--rows-per-record",
            "100",
            "--cache",
            str(cache),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    assert summary["rows"] == 5000 and summary["scale"] == 1.0
    assert summary["raw"]["bytes"] > 0 and summary["raw"]["disk_bytes"] > 0
    assert set(summary["preprocess"]) == {"zoo", "clean"}
    for protocol, r in summary["preprocess"].items():
        assert r["rows"] == 5000, protocol
        assert r["vocab_size"] > 39 and r["distinct_values"] > 0
        assert r["output_disk_bytes"] > 0 and r["peak_memory_bytes"] > 0
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["rows_per_s"] > 0
        assert {"parse", "split_vocab", "write"} <= set(r["phases"])
        assert sum(r["splits"].values()) + r["dropped_rows"] == 5000
    assert set(summary["preprocess"]["clean"]["splits"]) == {"train", "valid", "test"}

    compare = summary["compare"]
    assert compare["rows"] == 2000 and compare["raw_disk_bytes"] > 0
    for protocol in ("zoo", "clean"):
        assert compare["preprocess"][protocol]["rows"] == 2000
        ratio = compare["ratio"][protocol]
        assert ratio["rows"]["total"] == 2.5
        assert ratio["output_disk"]["total"] > 1  # more rows, more shards

    train = summary["train"]
    assert train["steps"] == 3 and train["batch_size"] == 500
    assert train["emb_dim"] == 80 and train["deep_layers"] == [1024, 512, 256, 128]
    assert train["vocab_size"] == summary["preprocess"]["zoo"]["vocab_size"]
    assert train["state_bytes"] == train["parameters"] * 12 > train["table_state_bytes"] > 0
    assert train["samples_per_s"] > 0 and train["losses_finite"]
    assert train["train_rows"] == summary["preprocess"]["zoo"]["splits"]["train"]
    assert train["epochs"] == 5  # the zoo preset's
    # the zoo's 8.16 ms/step comes with its README's batch of 1000 rows
    assert train["ascend_steps_per_epoch"] == -(-train["train_rows"] // 1000)

    goals = summary["goals"]
    assert len(goals) == 6 and {g["status"] for g in goals} <= {"PASS", "MISS"}
    assert not any(g["full_size"] for g in goals)
    assert "PASS" in proc.stdout or "MISS" in proc.stdout

    # Written only under --cache: nothing in the HOME, TMPDIR and working folder it was
    # given, no bytecode beside the benchmarks, and the raw text, zoo shards under cache.
    for name in ("home", "tmp", "cwd"):
        assert _files(tmp_path / name) == [], name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cwd", "home", "tmp"]
    pycache = REPO / "benchmarks" / "__pycache__"
    fresh = [
        p
        for p in (pycache.glob("*.pyc") if pycache.is_dir() else [])
        if p.name.split(".")[0] in ("criteo_scale", "preprocess") and p.stat().st_mtime >= started
    ]
    assert fresh == []
    written = _files(cache)
    assert any(p.name == "train.txt" for p in written)
    assert any(p.name == "stats.json" for p in written)

    gone = _run(["--clean", "--cache", str(cache)], tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert not cache.exists()


def test_clean_refuses_a_folder_that_is_not_its_cache(tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    proc = _run(["--clean", "--cache", str(other)], tmp_path)
    assert proc.returncode != 0
    assert "not this script's cache" in proc.stderr
    assert (other / "notes.txt").read_text() == "keep me\n"
