"""Batches read back from MindRecord: coverage, partial batch, shuffling, rank sharding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from deepfm_lib.config import PreprocessParams
from deepfm_lib.data.dataset import (
    COLUMNS,
    decode_record,
    encode_record,
    iter_batches,
    split_files,
    split_rows,
)
from deepfm_lib.data.preprocess import preprocess
from deepfm_lib.data.schema import Layout
from deepfm_lib.data.synthetic import generate

ROWS = 3000

CRITEO = Layout(width=39, weighted=13, reserved=39)  # 13 dense + 26 categorical


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    generate(root / "raw", ROWS, seed=9, progress=False)
    # clean: nothing dropped, partial last records; 2 files per split.
    cfg = PreprocessParams(protocol="clean", threshold=3, rows_per_record=70, shards=2)
    preprocess(root / "raw" / "train.txt", root / "data", cfg, progress=False)
    return root / "data"


def rows_of(batches) -> Counter:
    """Each row as bytes of its ids, weights and label; the I1..I13 weights and the
    hashed ids make rows distinct enough to count."""
    out: Counter = Counter()
    for ids, w, lab in batches:
        for i in range(len(lab)):
            out[ids[i].tobytes() + w[i].tobytes() + lab[i].tobytes()] += 1
    return out


def test_shapes_dtypes_and_partial_last_batch(data_dir):
    n = split_rows(data_dir, "train")
    assert n == 2400
    batches = list(iter_batches(data_dir, "train", 1000, shuffle=False, seed=0))
    assert [len(b[2]) for b in batches] == [1000, 1000, 400]
    ids, w, lab = batches[0]
    assert ids.dtype == np.int32 and ids.shape == (1000, 39)
    assert w.dtype == np.float32 and w.shape == (1000, 39)
    assert lab.dtype == np.float32 and lab.shape == (1000, 1)
    assert set(np.unique(lab)) <= {0.0, 1.0}
    assert (ids[:, :13] == np.arange(13)).all()
    assert len(split_files(data_dir, "train")) == 2


def test_every_row_once_per_epoch_with_shuffle(data_dir):
    plain = rows_of(iter_batches(data_dir, "train", 256, shuffle=False, seed=0))
    assert sum(plain.values()) == 2400
    for epoch in (0, 1):
        shuffled = rows_of(iter_batches(data_dir, "train", 256, shuffle=True, seed=4, epoch=epoch))
        assert shuffled == plain


def test_shuffle_is_a_function_of_seed_and_epoch(data_dir):
    def labels(seed, epoch):
        return np.concatenate(
            [
                b[1][:, 0]
                for b in iter_batches(data_dir, "train", 500, shuffle=True, seed=seed, epoch=epoch)
            ]
        )

    a = labels(1, 0)
    assert np.array_equal(a, labels(1, 0))
    assert not np.array_equal(a, labels(1, 1))
    assert not np.array_equal(a, labels(2, 0))
    unshuffled = np.concatenate(
        [b[1][:, 0] for b in iter_batches(data_dir, "train", 500, shuffle=False, seed=1)]
    )
    assert not np.array_equal(a, unshuffled)


@pytest.mark.parametrize("num_shards", [2, 3])
def test_shards_partition_the_split(data_dir, num_shards):
    whole = rows_of(iter_batches(data_dir, "valid", 64, shuffle=False, seed=0))
    parts = []
    for shard_id in range(num_shards):
        part = rows_of(
            iter_batches(
                data_dir,
                "valid",
                64,
                shuffle=True,
                seed=3,
                epoch=2,
                num_shards=num_shards,
                shard_id=shard_id,
            )
        )
        assert sum(part.values()) == split_rows(data_dir, "valid", num_shards, shard_id) > 0
        parts.append(part)
    assert sum(parts, Counter()) == whole
    for a in range(num_shards):
        for b in range(a + 1, num_shards):
            assert not (parts[a].keys() & parts[b].keys())


def test_bad_requests(data_dir):
    with pytest.raises(ValueError, match="no split 'dev'"):
        split_rows(data_dir, "dev")
    with pytest.raises(ValueError, match="shard_id"):
        list(iter_batches(data_dir, "train", 10, shuffle=False, seed=0, num_shards=2, shard_id=2))
    with pytest.raises(FileNotFoundError, match="stats.json"):
        split_files(data_dir.parent / "raw", "train")


def test_mindrecord_files_read_with_mindspore_sharding(data_dir):
    # The files stay ordinary MindRecord: MindDataset's own num_shards/shard_id split
    # them, and decode_record turns a record's bytes back into ids, weights and labels.
    import mindspore.dataset as ds

    files = split_files(data_dir, "train")
    whole = rows_of(iter_batches(data_dir, "train", 1000, shuffle=False, seed=0))
    seen: Counter = Counter()
    for shard_id in range(2):
        data = ds.MindDataset(
            files, columns_list=COLUMNS, shuffle=False, num_shards=2, shard_id=shard_id
        )
        records = [
            decode_record(r[0], CRITEO)
            for r in data.create_tuple_iterator(output_numpy=True, num_epochs=1)
        ]
        assert records and all(ids.dtype == np.int32 for ids, _, _ in records)
        seen += rows_of(records)
    # MindDataset pads the shards to equal record counts by repeating records: every row
    # is read, some twice.
    assert seen.keys() == whole.keys()


def test_record_round_trip_and_malformed_record():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (3, 39)).astype(np.int32)
    dense = rng.random((3, 13), dtype=np.float32)
    labels = np.array([0.0, 1.0, 1.0], np.float32)
    blob = encode_record(ids, dense, labels)
    got_ids, got_vals, got_labels = decode_record(
        np.frombuffer(blob, dtype=f"S{len(blob)}"), CRITEO
    )
    assert np.array_equal(got_ids, ids) and got_ids.dtype == np.int32
    assert np.array_equal(got_vals[:, :13], dense) and (got_vals[:, 13:] == 1).all()
    assert np.array_equal(got_labels[:, 0], labels)
    # Transposed (field-major) inputs encode the same rows.
    assert encode_record(ids.T.copy().T, dense.T.copy().T, labels) == blob
    with pytest.raises(ValueError, match="malformed record"):
        decode_record(blob[:-4], CRITEO)


def test_data_from_an_older_layout_is_refused(data_dir, tmp_path):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(data_dir, old)
    stats = json.loads((old / "stats.json").read_text())
    stats["schema"] = {"feat_ids": {"type": "bytes"}, "feat_vals": {}, "label": {}}
    (old / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match="run preprocessing again"):
        list(iter_batches(old, "train", 10, shuffle=False, seed=0))
    # Data written before the schema: no row layout to read the records with.
    stats = json.loads((data_dir / "stats.json").read_text())
    del stats["data"]
    (old / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match="no 'data' entry"):
        list(iter_batches(old, "train", 10, shuffle=False, seed=0))
