"""The raw Criteo reader: parsing, line numbers, and every kind of bad input."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import numpy as np
import pytest

from deepfm_lib.data.criteo import N_CAT, N_DENSE, CriteoFormatError, read_chunks

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo_sample_200.txt"


def make_line(label="0", dense=None, cats=None) -> str:
    dense = dense if dense is not None else [str(i) for i in range(N_DENSE)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(N_CAT)]
    return "\t".join([label, *dense, *cats])


def write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes("".join(line + newline for line in lines).encode())
    return path


def read_all(path, **kw):
    chunks = list(read_chunks(path, **kw))
    cat = lambda name: np.concatenate([getattr(c, name) for c in chunks])  # noqa: E731
    return chunks, {
        n: cat(n) for n in ("label", "dense", "dense_missing", "cat", "cat_missing", "line")
    }


@pytest.mark.skipif(not SAMPLE.is_file(), reason="../shared/data sample not present")
def test_real_criteo_sample_reads_every_row():
    chunks, cols = read_all(SAMPLE)
    assert len(cols["label"]) == 200
    assert int(cols["label"].sum()) == 49
    first = SAMPLE.read_text().splitlines()[0].split("\t")
    assert cols["cat"][0, 0] == int(first[14], 16)  # C1 of line 1
    assert cols["dense"][0, 2] == int(first[3])  # I3 of line 1
    assert cols["dense_missing"][0, 0] == (first[1] == "")
    assert cols["line"].tolist() == list(range(1, 201))
    assert sum(c.lines_seen for c in chunks) == 200


def test_values_missing_and_negative(tmp_path):
    dense = ["", "-3", "0", "17"] + [""] * 9
    cats = ["", "deadbeef", "00000001"] + [""] * 23
    chunks, cols = read_all(write(tmp_path / "a.txt", [make_line("1", dense, cats)]))
    assert cols["label"].tolist() == [1]
    assert cols["dense"][0, :4].tolist() == [0, -3, 0, 17]
    assert cols["dense_missing"][0, :4].tolist() == [True, False, False, False]
    assert cols["cat"][0, :3].tolist() == [0, 0xDEADBEEF, 1]
    assert cols["cat_missing"][0, :3].tolist() == [True, False, False]


def test_unusual_but_valid_values(tmp_path):
    dense = ["-0", "007", "-9223372036854775807", "9223372036854775807"] + [""] * 9
    _, cols = read_all(write(tmp_path / "u.txt", [make_line("0", dense), make_line("1")]))
    assert cols["dense"][0, :4].tolist() == [0, 7, -(2**63) + 1, 2**63 - 1]
    assert cols["dense_missing"][0, :4].tolist() == [False] * 4


def test_short_and_long_line_in_one_block(tmp_path):
    # 38 + 40 fields: as many tabs in the block as two good lines
    short = make_line()[: make_line().rfind("\t")]
    lines = [make_line("0"), short, make_line("1") + "\t00000000", make_line("0")]
    with pytest.raises(CriteoFormatError, match=r"line 2, field fields"):
        read_all(write(tmp_path / "s.txt", lines))
    chunks, cols = read_all(tmp_path / "s.txt", on_bad_line="skip")
    assert cols["line"].tolist() == [1, 4]
    assert sum(c.bad_lines["field_count"] for c in chunks) == 2


def test_gzip_and_crlf_read_like_plain(tmp_path):
    lines = [make_line(str(i % 2)) for i in range(50)]
    plain = write(tmp_path / "p.txt", lines)
    crlf = write(tmp_path / "c.txt", lines, newline="\r\n")
    gz = tmp_path / "g.txt.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    _, ref = read_all(plain)
    for other in (crlf, gz):
        _, got = read_all(other)
        for name in ref:
            assert np.array_equal(ref[name], got[name]), (other, name)


def test_last_line_without_newline(tmp_path):
    path = tmp_path / "n.txt"
    path.write_text(make_line("1") + "\n" + make_line("0"))
    _, cols = read_all(path)
    assert cols["label"].tolist() == [1, 0]


def test_many_chunks_keep_line_numbers(tmp_path):
    lines = [make_line(str(i % 2), dense=[str(i)] + [""] * 12) for i in range(3000)]
    lines[2500] = make_line("7")
    path = write(tmp_path / "big.txt", lines)
    chunks, cols = read_all(path, chunk_rows=300, on_bad_line="skip")
    assert len(chunks) > 1
    assert sum(c.bad_lines.get("label", 0) for c in chunks) == 1
    assert cols["line"].tolist() == [n for n in range(1, 3001) if n != 2501]
    assert np.array_equal(cols["dense"][:, 0], cols["line"] - 1)
    with pytest.raises(CriteoFormatError, match=r"line 2501, field label"):
        read_all(path, chunk_rows=300)


BAD = [
    # (line text, reason, field named in the message)
    (make_line()[: make_line().rfind("\t")], "field_count", "fields"),
    (make_line() + "\textra", "field_count", "fields"),
    ("", "field_count", "fields"),
    (make_line(label="2"), "label", "label"),
    (make_line(label=""), "label", "label"),
    (make_line(dense=["1"] * 4 + ["1.5"] + ["1"] * 8), "dense", "I5"),
    (make_line(dense=["1"] * 4 + [" 5"] + ["1"] * 8), "dense", "I5"),
    (make_line(dense=["0x1f"] + ["1"] * 12), "dense", "I1"),
    (make_line(dense=["1"] * 12 + ["abc"]), "dense", "I13"),
    (
        make_line(
            cats=["0"] * 0
            + [f"{i:08x}" for i in range(11)]
            + ["0123456g"]
            + [f"{i:08x}" for i in range(14)]
        ),
        "hash",
        "C12",
    ),
    (make_line(cats=["ABCDEF01"] + [""] * 25), "hash", "C1"),
    (make_line(cats=[""] * 25 + ["1234567"]), "hash", "C26"),
    # Values the columnar parser (polars) would accept but the format does not:
    (make_line(label="00"), "label", "label"),
    (make_line(dense=["1"] * 2 + ["+5"] + ["1"] * 10), "dense", "I3"),
    (make_line(dense=["9223372036854775808"] + ["1"] * 12), "dense", "I1"),
    (make_line(dense=["-9223372036854775808"] + ["1"] * 12), "dense", "I1"),
    (make_line(dense=["1-2"] + ["1"] * 12), "dense", "I1"),
    (make_line(cats=["-abcdef1"] + [""] * 25), "hash", "C1"),
    (make_line(cats=[""] * 3 + ["abcd-ef1"] + [""] * 22), "hash", "C4"),
    (make_line(cats=[""] * 3 + ["+abcdef1"] + [""] * 22), "hash", "C4"),
    (make_line(cats=[""] * 3 + ["abcdef123"] + [""] * 22), "hash", "C4"),
    (make_line(cats=[""] * 3 + ["abc\rdef1"] + [""] * 22), "hash", "C4"),
]


@pytest.mark.parametrize(("bad", "reason", "field"), BAD)
def test_bad_line_error_names_file_line_field(tmp_path, bad, reason, field):
    path = write(tmp_path / "bad.txt", [make_line("0"), make_line("1"), bad, make_line("0")])
    with pytest.raises(CriteoFormatError) as info:
        read_all(path)
    msg = str(info.value)
    assert str(path) in msg and "line 3" in msg and f"field {field}" in msg
    assert (info.value.line, info.value.field) == (3, field)


@pytest.mark.parametrize(("bad", "reason", "field"), BAD)
def test_bad_line_skip_counts_reason(tmp_path, bad, reason, field):
    path = write(tmp_path / "bad.txt", [make_line("0"), make_line("1"), bad, make_line("0")])
    chunks, cols = read_all(path, on_bad_line="skip")
    counts = {}
    for c in chunks:
        for k, v in c.bad_lines.items():
            counts[k] = counts.get(k, 0) + v
    assert counts == {reason: 1}
    assert cols["line"].tolist() == [1, 2, 4]
    assert cols["label"].tolist() == [0, 1, 0]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(CriteoFormatError, match="empty") as info:
        read_all(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_all(path)


def test_truncated_gzip(tmp_path):
    lines = [make_line(str(i % 2)) for i in range(2000)]
    data = gzip.compress("".join(line + "\n" for line in lines).encode())
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CriteoFormatError, match="truncated gzip") as info:
        read_all(path)
    assert str(path) in str(info.value)


def test_stopping_early_releases_the_reader(tmp_path):
    lines = [make_line(str(i % 2)) for i in range(3000)]
    path = write(tmp_path / "big.txt", lines)
    before = threading.active_count()
    for _ in read_chunks(path, chunk_rows=300):
        break
    assert threading.active_count() == before


def test_bad_arguments(tmp_path):
    path = write(tmp_path / "a.txt", [make_line()])
    with pytest.raises(ValueError, match="on_bad_line"):
        read_all(path, on_bad_line="ignore")
