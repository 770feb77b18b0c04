"""Reading preprocessed MindRecord splits as numpy batches, per rank.

Why numpy batches rather than a mindspore.dataset pipeline end to end: a record holds a
block of rows (1000 in the zoo's layout), and the study needs every row exactly once per
epoch, a partial last batch, and an order that a resumed run can replay; records are read
with mindspore.dataset.MindDataset and re-batched here.

Sharding is static: rank k reads records k, k + n, k + 2n, ... of the split (the same
interleave MindDataset's own num_shards/shard_id uses), so its row count is the same every
epoch. Shuffling permutes this rank's records and then rows inside windows of records, from
a generator seeded by (seed, epoch, num_shards, shard_id) alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from deepfm_lib.data.schema import Layout

log = logging.getLogger(__name__)

# One MindRecord record holds a block of rows (1000 in the zoo's layout) as a single bytes
# field: MindRecord's cost is per field of a record, so one field writes about twice as fast
# as the zoo's three (feat_ids, feat_vals, label). The blob is, little-endian and row-major:
# ids int32 (n, width), the leading `weighted` weights float32 (n, weighted), labels float32
# (n,); the data set's Layout (stats.json's "data") gives both numbers. For Criteo that is
# ids (n, 39) and the 13 dense weights: categorical weights are always 1, so not stored.
SCHEMA = {"record": {"type": "bytes"}}
COLUMNS = list(SCHEMA)
_PAGE_SIZE = 1 << 22
SHUFFLE_WINDOW_RECORDS = 32  # rows are mixed across this many records at a time


def _stats(data_dir: Path) -> dict:
    path = Path(data_dir) / "stats.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run preprocessing first")
    stats = json.loads(path.read_text())
    if stats.get("schema") != SCHEMA:
        raise ValueError(
            f"{path}: the MindRecord files have the record layout {stats.get('schema')}, "
            f"this version reads {SCHEMA}; run preprocessing again (dvc repro preprocess)"
        )
    if "data" not in stats:
        raise ValueError(
            f"{path}: written before data sets had a schema (no 'data' entry); run "
            "preprocessing again (dvc repro preprocess)"
        )
    return stats


def layout(data_dir: Path) -> Layout:
    """The preprocessed rows' layout: positions per row (a model's field_size) and more."""
    return Layout.of(_stats(data_dir)["data"])


def _split_info(data_dir: Path, split: str) -> dict:
    stats = _stats(data_dir)
    if split not in stats["splits"]:
        raise ValueError(
            f"{Path(data_dir) / 'stats.json'}: no split {split!r} (has {sorted(stats['splits'])})"
        )
    return stats["splits"][split]


def split_files(data_dir: Path, split: str) -> list[str]:
    """The split's MindRecord files, in the order their records are numbered."""
    files = [str(Path(data_dir) / name) for name in _split_info(data_dir, split)["files"]]
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: missing MindRecord file of split {split!r}")
    return files


def _record_rows(data_dir: Path, split: str) -> np.ndarray:
    info = _split_info(data_dir, split)
    runs = [run for name in info["files"] for run in info["record_rows"][name]]
    if not runs:
        return np.zeros(0, dtype=np.int64)
    return np.repeat([r for r, _ in runs], [t for _, t in runs]).astype(np.int64)


def _check_shard(num_shards: int, shard_id: int) -> None:
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(
            f"need num_shards >= 1 and 0 <= shard_id < num_shards, got "
            f"num_shards={num_shards}, shard_id={shard_id}"
        )


def split_rows(data_dir: Path, split: str, num_shards: int = 1, shard_id: int = 0) -> int:
    """Rows this rank reads from the split each epoch (every rank: the whole split)."""
    _check_shard(num_shards, shard_id)
    return int(_record_rows(data_dir, split)[shard_id::num_shards].sum())


@lru_cache(maxsize=1)
def _workers() -> int:
    # mindspore.dataset refuses more workers than cores.
    return max(1, min(4, os.cpu_count() or 1))


def encode_record(ids: np.ndarray, stored_weights: np.ndarray, labels: np.ndarray) -> bytes:
    """One record's blob from ids (n, width), the leading weights (n, weighted), labels (n,)."""
    return b"".join(
        (
            np.asarray(ids, dtype="<i4").tobytes(order="C"),
            np.asarray(stored_weights, dtype="<f4").tobytes(order="C"),
            np.asarray(labels, dtype="<f4").tobytes(),
        )
    )


def run_lengths(values: np.ndarray) -> list[list[int]]:
    """[[value, times], ...] of consecutive equal values: stats.json's rows per record."""
    if len(values) == 0:
        return []
    change = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], change])
    times = np.diff(np.concatenate([starts, [len(values)]]))
    return [[int(values[a]), int(t)] for a, t in zip(starts, times, strict=True)]


def open_writer(path: str, rows: int, width: int, description: str):
    """A MindRecord FileWriter for one file of the record format, sized for ``rows`` rows.

    Smaller pages than the 32 MB default keep small outputs small (files are allocated page
    by page); the header must index every page, so it grows with the row count.
    """
    from mindspore.mindrecord import FileWriter  # heavy import, only where files are written

    writer = FileWriter(path, 1)
    writer.add_schema(SCHEMA, description)
    pages = rows * width * 8 // _PAGE_SIZE + 1
    writer.set_page_size(_PAGE_SIZE)
    writer.set_header_size(int(min(1 << 27, max(1 << 20, 1 << (pages * 1024).bit_length()))))
    return writer


def close_writer(writer, path: str) -> None:
    writer.commit()
    for name in (path, path + ".db"):
        os.chmod(name, 0o644)  # FileWriter makes them private; they are ordinary outputs


def write_split(
    folder: Path,
    split: str,
    ids: np.ndarray,
    weights: np.ndarray,
    labels: np.ndarray,
    rows_per_record: int,
    shards: int,
) -> dict:
    """One split as records of ``rows_per_record`` rows (the last may be short), record r
    in file r % files; returns its stats.json entry. For data sets that fit in memory."""
    n = len(labels)
    n_records = -(-n // rows_per_record)
    n_files = min(shards, n_records)
    files = [f"{split}.mindrecord{i}" for i in range(n_files)]
    sizes = np.minimum(rows_per_record, n - rows_per_record * np.arange(n_records))
    for i, name in enumerate(files):
        path = str(Path(folder) / name)
        writer = open_writer(path, int(sizes[i::n_files].sum()), ids.shape[1], split)
        for r in range(i, n_records, n_files):
            lo, hi = r * rows_per_record, min(n, (r + 1) * rows_per_record)
            writer.write_raw_data(
                [{"record": encode_record(ids[lo:hi], weights[lo:hi], labels[lo:hi])}]
            )
        close_writer(writer, path)
    pos = int(labels.sum())
    return {
        "rows": n,
        "positives": pos,
        "positive_rate": pos / n,
        "records": n_records,
        "files": files,
        "record_rows": {f: run_lengths(sizes[i::n_files]) for i, f in enumerate(files)},
    }


def decode_record(
    blob: bytes | np.ndarray, shape: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One record as (ids int32 (n, width), weights float32 (n, width), labels float32 (n, 1)).

    MindDataset hands a bytes field over as a one-element bytes array; plain bytes work too.
    """
    raw = np.frombuffer(blob, dtype=np.uint8)
    n, extra = divmod(raw.size, shape.row_bytes)
    if extra:
        raise ValueError(
            f"malformed record: {raw.size} bytes is not a whole number of "
            f"{shape.row_bytes}-byte rows (ids, stored weights, label)"
        )
    ids_end, weights_end = 4 * shape.width * n, 4 * (shape.width + shape.weighted) * n
    ids = raw[:ids_end].view("<i4").astype(np.int32, copy=False).reshape(n, shape.width)
    vals = np.ones((n, shape.width), dtype=np.float32)
    vals[:, : shape.weighted] = raw[ids_end:weights_end].view("<f4").reshape(n, shape.weighted)
    labels = raw[weights_end:].view("<f4").astype(np.float32).reshape(n, 1)
    return ids, vals, labels


def _read_records(
    files: list[str], indices: np.ndarray, shape: Layout
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    import mindspore.dataset as ds  # heavy import, only when reading

    if len(indices) == 0:
        return
    data = ds.MindDataset(
        files,
        columns_list=COLUMNS,
        num_parallel_workers=_workers(),
        sampler=ds.SubsetSampler(indices.tolist()),
    )
    for (blob,) in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        yield decode_record(blob, shape)


def iter_batches(
    data_dir: Path,
    split: str,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    num_shards: int = 1,
    shard_id: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (ids int32 (b, width), weights float32 (b, width), labels float32 (b, 1)).

    Every row of this rank's part of the split exactly once; the last batch may be short.
    """
    _check_shard(num_shards, shard_id)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = split_files(data_dir, split)
    n_records = len(_record_rows(data_dir, split))
    mine = np.arange(n_records)[shard_id::num_shards]
    rng = None
    if shuffle:
        rng = np.random.default_rng([seed, epoch, num_shards, shard_id])
        mine = rng.permutation(mine)

    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending_rows = 0
    window: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def flush_window() -> None:
        nonlocal pending_rows
        ids, vals, lab = (np.concatenate(parts) for parts in zip(*window, strict=True))
        window.clear()
        if rng is not None:
            order = rng.permutation(len(lab))
            ids, vals, lab = ids[order], vals[order], lab[order]
        pending.append((ids, vals, lab))
        pending_rows += len(lab)

    def take(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nonlocal pending_rows
        ids, vals, lab = (np.concatenate(parts) for parts in zip(*pending, strict=True))
        pending.clear()
        if len(lab) > n:
            pending.append((ids[n:], vals[n:], lab[n:]))
        pending_rows -= min(n, len(lab))
        return ids[:n], vals[:n], lab[:n]

    for record in _read_records(files, mine, layout(data_dir)):
        window.append(record)
        if len(window) >= SHUFFLE_WINDOW_RECORDS or rng is None:
            flush_window()
        while pending_rows >= batch_size:
            yield take(batch_size)
    if window:
        flush_window()
    while pending_rows > 0:
        yield take(min(batch_size, pending_rows))
