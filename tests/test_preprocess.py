"""Preprocessing: the zoo's semantics computed by hand, the clean protocol, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import file_size_limit
from sklearn.metrics import roc_auc_score

from deepfm_lib.config import PreprocessParams
from deepfm_lib.data.criteo import SCHEMA as CRITEO
from deepfm_lib.data.criteo import CriteoFormatError
from deepfm_lib.data.dataset import COLUMNS, decode_record
from deepfm_lib.data.oracle import TeacherScore
from deepfm_lib.data.preprocess import (
    load_vocabulary,
    preprocess,
    zoo_test_lines,
)
from deepfm_lib.data.schema import DataFormatError
from deepfm_lib.data.synthetic import generate

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo_sample_200.txt"


def read_records(path: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Records of one MindRecord file in stored order, as (ids, weights, labels)."""
    import mindspore.dataset as ds

    data = ds.MindDataset(str(path), columns_list=COLUMNS, shuffle=False)
    out = []
    for (blob,) in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        ids, vals, label2d = decode_record(blob, CRITEO.layout())
        out.append((ids, vals, label2d[:, 0]))
    return out


def zoo_test_set(n_lines: int, fraction: float, seed: int) -> set[int]:
    """The zoo's own code: shuffle a Python list with the global legacy numpy RNG."""
    np.random.seed(seed)
    all_indices = list(range(n_lines))
    np.random.shuffle(all_indices)
    return set(all_indices[: int(n_lines * fraction)])


def line(label, i1="", i3="", c1="", extra_cats=None) -> str:
    dense = [i1, "", i3] + [""] * 10
    cats = [c1] + (extra_cats or [""] * 25)
    return "\t".join([str(label), *dense, *cats])


# Ten lines. C1 counts: a x3, b x2, "" x2, c x2 (only on the dropped lines 9-10), d x1.
C1 = [
    "aaaaaaaa",
    "bbbbbbbb",
    "aaaaaaaa",
    "",
    "aaaaaaaa",
    "",
    "dddddddd",
    "bbbbbbbb",
    "cccccccc",
    "cccccccc",
]
I1 = ["5", "", "10", "-2", "0", "3", "1", "2", "7", "20"]  # max 20 sits on dropped line 10
LABELS = [1, 0, 0, 1, 0, 0, 1, 0, 1, 1]


@pytest.fixture()
def hand_file(tmp_path) -> Path:
    rows = [
        line(lab, i1=i1, c1=c1, i3="-5" if k == 0 else "")
        for k, (lab, i1, c1) in enumerate(zip(LABELS, I1, C1, strict=True))
    ]
    path = tmp_path / "hand.txt"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_zoo_by_hand(hand_file, tmp_path):
    # threshold 1: keep values seen at least twice; blocks of 4 rows; seed 2026 marks line
    # index 7 (line 8, the closing line of the second block) as the one test line.
    assert zoo_test_set(10, 0.1, 2026) == {7}
    cfg = PreprocessParams(threshold=1, rows_per_record=4, split_seed=2026, shards=1)
    out = tmp_path / "out"
    stats = preprocess(hand_file, out, cfg, progress=False)

    # ids: dense 0..12, OOV 13..38, then kept values field by field, first appearance:
    # C1: a -> 39, b -> 40, "" -> 41, c -> 42 (kept though only on dropped lines), d OOV 13.
    # C2..C26 are always empty: that value is kept, ids 43..67.
    c1_id = {"aaaaaaaa": 39, "bbbbbbbb": 40, "": 41, "cccccccc": 42, "dddddddd": 13}
    assert stats["vocab_size"] == 68
    assert stats["vocab_per_field"]["C1"] == 4 and stats["vocab_per_field"]["C2"] == 1
    assert stats["dense_max"]["I1"] == 20 and stats["dense_max"]["I3"] == 0

    def expected(k):
        ids = list(range(13)) + [c1_id[C1[k]]] + list(range(43, 68))
        w = [0.0] * 39
        w[0] = float(I1[k]) / 20 if I1[k] else 0.0
        w[2] = 0.0  # I3 = -5 on line 1, but max_3 = 0: the zoo would divide by zero
        w[13:] = [1.0] * 26
        return np.array(ids), np.array(w, dtype=np.float32)

    train = read_records(out / "train.mindrecord0")
    test = read_records(out / "test.mindrecord0")
    assert [len(r[2]) for r in train] == [4] and [len(r[2]) for r in test] == [4]
    for records, lines in ((train, range(0, 4)), (test, range(4, 8))):
        ids, w, lab = records[0]
        for row, k in enumerate(lines):
            exp_ids, exp_w = expected(k)
            assert ids[row].tolist() == exp_ids.tolist(), k
            assert np.array_equal(w[row], exp_w), k
            assert lab[row] == LABELS[k]
    assert stats["dropped_rows"] == 2  # lines 9 and 10: the trailing partial block
    assert stats["splits"]["train"]["rows"] == 4 and stats["splits"]["test"]["rows"] == 4
    assert stats["splits"]["test"]["positives"] == 1
    assert stats["eval_split"] == "test" and stats["protocol"] == "zoo"
    assert stats["quirks"] and "oracle_auc" not in stats  # no teacher to score with
    vocab = load_vocabulary(out)  # value -> id, to score new raw rows the same way
    assert vocab["C1"] == {k: v for k, v in c1_id.items() if v >= 39}
    assert all(vocab[f"C{i}"] == {"": 41 + i} for i in range(2, 27))
    assert stats["vocabulary_file"] == "vocab.npy"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "stats.json",
            "vocab.npy",
            "train.mindrecord0",
            "train.mindrecord0.db",
            "test.mindrecord0",
            "test.mindrecord0.db",
        ]
    )


def test_zoo_block_closed_by_bad_line_runs_on(tmp_path):
    # 20 lines, blocks of 4; line 4 is bad, so the first block closes at line 8 (7 rows).
    assert zoo_test_set(20, 0.1, 2022) == {12, 19}  # line 20 closes a test block
    rows = [line(k % 2, i1=str(k + 1)) for k in range(20)]
    rows[3] = "1\t2\t3"
    path = tmp_path / "r.txt"
    path.write_text("\n".join(rows) + "\n")
    cfg = PreprocessParams(threshold=0, rows_per_record=4, split_seed=2022, shards=1)
    stats = preprocess(path, tmp_path / "out", cfg, on_bad_line="skip", progress=False)
    assert stats["bad_lines"]["field_count"] == 1 and stats["lines_read"] == 20
    train = read_records(tmp_path / "out" / "train.mindrecord0")
    test = read_records(tmp_path / "out" / "test.mindrecord0")
    line_of = lambda rec: np.round(rec[1][:, 0] * 20).astype(int).tolist()  # noqa: E731
    assert [line_of(r) for r in train] == [[1, 2, 3, 5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    assert [line_of(r) for r in test] == [[17, 18, 19, 20]]


@pytest.mark.parametrize("n", [1, 10, 997, 5000])
def test_zoo_test_lines_match_list_shuffle(n):
    mask = zoo_test_lines(n, 0.1, 2020)
    assert set(np.flatnonzero(mask).tolist()) == zoo_test_set(n, 0.1, 2020)


def test_clean_fits_on_train_rows_only(tmp_path):
    # 40 lines; I1 = line number identifies rows in the output; C1 has one value per pair
    # of lines, so with threshold 1 a value is kept only if both its lines are in train.
    rows = [line(k % 2, i1=str(k + 1), c1=f"{k // 2:08x}") for k in range(40)]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(rows) + "\n")
    cfg = PreprocessParams(protocol="clean", threshold=1, rows_per_record=3, shards=2)
    stats = preprocess(path, tmp_path / "out", cfg, progress=False)
    assert stats["eval_split"] == "valid" and stats["dropped_rows"] == 0
    assert {k: v["rows"] for k, v in stats["splits"].items()} == {
        "train": 32,
        "valid": 4,
        "test": 4,
    }
    seen: dict[str, list[tuple[int, int]]] = {}
    for split, info in stats["splits"].items():
        for name in info["files"]:
            for ids, w, _ in read_records(tmp_path / "out" / name):
                assert len(w) <= 3
                seen.setdefault(split, []).extend(
                    zip(ids[:, 13].tolist(), w[:, 0].tolist(), strict=True)
                )
    train_max = max(w for _, w in seen["train"])
    assert train_max == 1.0  # scaled by the train maximum
    scale = [w for _, w in seen["train"]]
    train_lines = sorted(round(w / min(x for x in scale if x > 0)) for w in scale)
    assert len(set(train_lines)) == 32
    pairs = {k // 2 for k in range(40)}
    kept = {p for p in pairs if sum((ln - 1) // 2 == p for ln in train_lines) == 2}
    assert stats["vocab_per_field"]["C1"] == len(kept)
    for split, rows_seen in seen.items():
        if split != "train":  # a valid/test line's pair is never complete in train: OOV
            assert all(i == 13 for i, _ in rows_seen)
    train_oov = sum(1 for i, _ in seen["train"] if i == 13)
    assert train_oov == 32 - 2 * len(kept)
    assert all(len(v) == stats["splits"][k]["rows"] for k, v in seen.items())


def test_log1p_dense_transform(tmp_path):
    # I1 = 0..39 (line k), I3 = -1 on every line, missing on some; 40 lines, clean protocol.
    rows = [line(k % 2, i1="" if k % 7 == 3 else str(k), i3="-1") for k in range(40)]
    path = tmp_path / "d.txt"
    path.write_text("\n".join(rows) + "\n")
    cfg = PreprocessParams(protocol="clean", threshold=0, rows_per_record=5, dense="log1p")
    stats = preprocess(path, tmp_path / "out", cfg, progress=False)
    assert stats["settings"]["dense"] == "log1p"
    top = stats["dense_max"]["I1"]  # the train maximum
    got = []
    for info in stats["splits"].values():
        for name in info["files"]:
            got += [w for _, w, _ in read_records(tmp_path / "out" / name)]
    weights = np.concatenate(got)
    seen = sorted({round(float(v), 6) for v in weights[:, 0]})
    # Every value x of I1 gives log1p(x) / log1p(train max); a missing value weight 0.
    expect = sorted({round(float(np.log1p(k) / np.log1p(top)), 6) for k in range(40) if k % 7 != 3})
    assert seen == expect
    assert np.all(weights[:, 2] == 0)  # I3: negative values count as 0, its max is 0
    with pytest.raises(ValueError, match="dense"):
        PreprocessParams(protocol="clean", dense="sqrt")
    with pytest.raises(ValueError, match="zoo protocol"):
        PreprocessParams(protocol="zoo", dense="log1p")
    with pytest.raises(ValueError, match="leave no rows for train"):
        PreprocessParams(protocol="clean", test_fraction=0.5, valid_fraction=0.5)


@pytest.mark.skipif(not SAMPLE.is_file(), reason="../shared/data sample not present")
@pytest.mark.parametrize("protocol", ["zoo", "clean"])
def test_real_sample_both_protocols(tmp_path, protocol):
    cfg = PreprocessParams(protocol=protocol, threshold=2, rows_per_record=10)
    stats = preprocess(SAMPLE, tmp_path / "out", cfg, progress=False)
    assert stats["rows_read"] == 200
    total = sum(s["rows"] for s in stats["splits"].values())
    assert total + stats["dropped_rows"] == 200
    assert sum(s["positives"] for s in stats["splits"].values()) == 49
    # zoo: max over all rows; clean: over train rows only (never larger)
    assert (
        (stats["dense_max"]["I5"] == 507333)
        if protocol == "zoo"
        else (stats["dense_max"]["I5"] <= 507333)
    )
    assert 39 < stats["vocab_size"] < 39 + 26 * 200


def test_same_input_same_bytes(tmp_path):
    generate(tmp_path / "raw", 3000, seed=5, progress=False)
    cfg = PreprocessParams(threshold=5, rows_per_record=100)

    def digest(d: Path) -> dict:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}

    preprocess(tmp_path / "raw" / "train.txt", tmp_path / "a", cfg, progress=False)
    preprocess(tmp_path / "raw" / "train.txt", tmp_path / "b", cfg, progress=False, workers=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_oracle_auc_and_gzip_input(tmp_path):
    info = generate(tmp_path / "raw", 4000, seed=6, progress=False)
    raw = tmp_path / "raw" / "train.txt"
    gz = tmp_path / "train.txt.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    cfg = PreprocessParams(threshold=5, rows_per_record=50)
    logits = tmp_path / "raw" / "teacher_logits.npy"
    # The same logits without teacher_parts.npy beside them, as in older raw folders.
    (tmp_path / "old").mkdir()
    old_logits = tmp_path / "old" / "teacher_logits.npy"
    old_logits.write_bytes(logits.read_bytes())
    a = preprocess(raw, tmp_path / "a", cfg, score_test=TeacherScore(logits), progress=False)
    b = preprocess(gz, tmp_path / "b", cfg, score_test=TeacherScore(old_logits), progress=False)
    assert a["oracle_auc"] == b["oracle_auc"] and a["splits"] == b["splits"]
    assert b["oracle_parts"] is None
    # Recompute from the test records: their rows are the zoo's test blocks.
    test_lines = np.flatnonzero(zoo_test_lines(4000, 0.1, 2020)) + 1
    blocks = [ln // 50 for ln in test_lines if ln % 50 == 0]
    lines = np.concatenate([np.arange(b * 50 - 49, b * 50 + 1) for b in sorted(blocks)])
    labels = np.array([int(x.split("\t", 1)[0]) for x in raw.read_text().splitlines()])
    expect = roc_auc_score(labels[lines - 1], np.load(logits)[lines - 1])
    assert a["oracle_auc"] == pytest.approx(expect)
    assert a["splits"]["test"]["rows"] == len(lines)
    assert 0.5 < a["oracle_auc"] and info["rows"] == 4000
    # The teacher's terms added one at a time, on the same rows; "all" is the oracle.
    parts_auc = a["oracle_parts"]
    assert list(parts_auc) == ["linear", "linear+fm", "all"]
    assert parts_auc["all"] == pytest.approx(a["oracle_auc"], abs=1e-12)
    assert all(0.5 < v < 1 for v in parts_auc.values())
    parts = np.load(tmp_path / "raw" / "teacher_parts.npy").astype(np.float64)[lines - 1]
    test_labels = labels[lines - 1]
    assert parts_auc["linear"] == pytest.approx(roc_auc_score(test_labels, parts[:, 0]))
    assert parts_auc["linear+fm"] == pytest.approx(roc_auc_score(test_labels, parts[:, :2].sum(1)))
    assert json.loads((tmp_path / "a" / "stats.json").read_text())["oracle_parts"] == parts_auc


BAD_LINES = {
    "field_count": "1\t2\t3",
    "label": line(3),
    "dense": line(0, i1="4.5"),
    "hash": line(0, c1="xyz"),
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_line_error_leaves_nothing(tmp_path, reason):
    rows = [line(k % 2, i1=str(k)) for k in range(30)]
    rows[17] = BAD_LINES[reason]
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    with pytest.raises(CriteoFormatError, match=r"bad.txt: line 18, field "):
        preprocess(path, out, PreprocessParams(threshold=0, rows_per_record=5), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]
    assert not multiprocessing.active_children()  # the writer process is gone too

    cfg = PreprocessParams(protocol="clean", threshold=0, rows_per_record=5)
    stats = preprocess(path, out, cfg, on_bad_line="skip", progress=False)
    assert stats["bad_lines"] == {**dict.fromkeys(BAD_LINES, 0), reason: 1}
    assert stats["rows_read"] == 29 and stats["lines_read"] == 30


def test_empty_missing_and_mismatched_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cfg = PreprocessParams()
    with pytest.raises(CriteoFormatError, match="empty.txt: file is empty"):
        preprocess(empty, tmp_path / "o", cfg, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        preprocess(tmp_path / "nothing.txt", tmp_path / "o", cfg, progress=False)
    generate(tmp_path / "raw", 200, seed=1, progress=False)
    np.save(tmp_path / "short.npy", np.zeros(10, np.float32))
    with pytest.raises(DataFormatError, match="short.npy: expected one teacher logit"):
        preprocess(
            tmp_path / "raw" / "train.txt",
            tmp_path / "o",
            PreprocessParams(rows_per_record=10),
            score_test=TeacherScore(tmp_path / "short.npy"),
            progress=False,
        )
    with pytest.raises(ValueError, match="would be empty"):  # 200 lines: no full block
        preprocess(tmp_path / "raw" / "train.txt", tmp_path / "o", cfg, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "raw", "short.npy"]
    with pytest.raises(ValueError, match="protocol"):
        PreprocessParams(protocol="fast")


def test_bad_teacher_parts_name_the_file(tmp_path):
    generate(tmp_path / "raw", 200, seed=1, progress=False)
    raw, logits = tmp_path / "raw" / "train.txt", tmp_path / "raw" / "teacher_logits.npy"
    parts_file = tmp_path / "raw" / "teacher_parts.npy"
    good = np.load(parts_file)
    cfg = PreprocessParams(protocol="clean", threshold=0, rows_per_record=10, shards=1)
    for bad in (good[:, :2], good[:10], good[:, 0]):
        np.save(parts_file, bad)
        with pytest.raises(DataFormatError, match=r"teacher_parts.npy: expected one row"):
            preprocess(raw, tmp_path / "o", cfg, score_test=TeacherScore(logits), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    # Right shape, but not these logits' parts (rows out of order): caught, not scored.
    np.save(parts_file, good[::-1].copy())
    with pytest.raises(DataFormatError, match=r"teacher_parts.npy: the parts .* add up"):
        preprocess(raw, tmp_path / "o", cfg, score_test=TeacherScore(logits), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_stats_file_matches_return_value(tmp_path):
    generate(tmp_path / "raw", 500, seed=2, progress=False)
    stats = preprocess(
        tmp_path / "raw" / "train.txt",
        tmp_path / "o",
        PreprocessParams(protocol="clean", rows_per_record=20, threshold=3),
        progress=False,
    )
    assert json.loads((tmp_path / "o" / "stats.json").read_text()) == stats
    assert stats["settings"]["protocol"] == "clean"
    assert stats["vocab_size"] == 39 + sum(stats["vocab_per_field"].values())


def test_zoo_counts_while_parsing_match_a_pass_over_the_spill(tmp_path):
    from deepfm_lib.data import preprocess as pp

    generate(tmp_path / "raw", 6000, seed=7, progress=False)
    spill = pp._Spill(tmp_path / "spill").create()
    fit = pp._CountsWhileParsing()
    _, _, sizes, _ = pp._parse_and_spill(
        tmp_path / "raw" / "train.txt", spill, "error", 500, False, fit
    )
    assert sizes.max() > 1024  # the count arrays had to grow
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    early = fit.result(sizes)
    late = pp._counts_over_rows(spill, np.ones(spill.rows, dtype=bool), offsets)
    for a, b in zip(early, late, strict=True):
        assert np.array_equal(a, b)


_PREPROCESS = """
import sys
from pathlib import Path
from deepfm_lib.config import PreprocessParams
from deepfm_lib.data.preprocess import preprocess
cfg = PreprocessParams(threshold=5, rows_per_record=100)
preprocess(Path(sys.argv[1]), Path(sys.argv[2]), cfg, progress=False)
"""


def _digest(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _staging_left(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def raw_and_shards(tmp_path_factory):
    """20,000 synthetic rows and their shards, written once by an undisturbed run."""
    root = tmp_path_factory.mktemp("faults")
    generate(root / "raw", 20_000, seed=5, progress=False)
    raw = root / "raw" / "train.txt"
    preprocess(
        raw, root / "good", PreprocessParams(threshold=5, rows_per_record=100), progress=False
    )
    return raw, _digest(root / "good")


def test_a_full_disk_while_writing_shards_keeps_the_previous_output(tmp_path, raw_and_shards):
    raw, good = raw_and_shards
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", _PREPROCESS, str(raw), str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert _digest(out) == good
    # Again, in a process whose files may not pass 1 MB (each shard is about 5 MB).
    proc = subprocess.run(
        cmd, capture_output=True, text=True, preexec_fn=file_size_limit(1 << 20), timeout=300
    )
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert ".mindrecord" in message and "MiB free" in message and "previous output" in message
    assert _digest(out) == good, "the previous shards are untouched"
    assert _staging_left(tmp_path) == []


def test_killed_preprocessing_leaves_no_orphans_and_a_rerun_gives_the_same_bytes(
    tmp_path, raw_and_shards
):
    raw, good = raw_and_shards
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", _PREPROCESS, str(raw), str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.tmp-*/*.mindrecord*")):  # killed while writing shards
        assert proc.poll() is None and time.monotonic() < deadline, "never reached the writes"
        time.sleep(0.01)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()  # SIGKILL: no cleanup runs in the parent
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"writer processes outlived the killed run: {alive}"
    assert not out.exists() and len(_staging_left(tmp_path)) == 1  # the dead run's staging
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert _digest(out) == good
    assert _staging_left(tmp_path) == [], "the rerun removes the dead run's staging folder"
