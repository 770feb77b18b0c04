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

from deepfm_lib.data.criteo import N_FIELDS

log = logging.getLogger(__name__)

COLUMNS = ["feat_ids", "feat_vals", "label"]
SHUFFLE_WINDOW_RECORDS = 32  # rows are mixed across this many records at a time


def _stats(data_dir: Path) -> dict:
    path = Path(data_dir) / "stats.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run preprocessing first")
    return json.loads(path.read_text())


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


def decode_record(
    ids: np.ndarray, vals: np.ndarray, label: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One MindRecord record as (ids int32 (n, 39), weights float32 (n, 39), labels (n, 1)).

    feat_ids is stored as the bytes of a little-endian int32 array (MindDataset hands it
    over as a one-element bytes array); files with an int32 feat_ids column read as well.
    """
    n = label.shape[0]
    if ids.dtype.kind == "S":
        ids = np.frombuffer(ids, dtype="<i4").astype(np.int32, copy=False)
    if ids.size != n * N_FIELDS or vals.size != n * N_FIELDS:
        raise ValueError(
            f"malformed record: {n} labels but {ids.size} ids and {vals.size} weights "
            f"(expected {N_FIELDS} per row)"
        )
    return ids.reshape(n, N_FIELDS), vals.reshape(n, N_FIELDS), label.reshape(n, 1)


def _read_records(
    files: list[str], indices: np.ndarray
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
    for ids, vals, label in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        yield decode_record(ids, vals, label)


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
    """Yield (ids int32 (b, 39), weights float32 (b, 39), labels float32 (b, 1)).

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

    for record in _read_records(files, mine):
        window.append(record)
        if len(window) >= SHUFFLE_WINDOW_RECORDS or rng is None:
            flush_window()
        while pending_rows >= batch_size:
            yield take(batch_size)
    if window:
        flush_window()
    while pending_rows > 0:
        yield take(min(batch_size, pending_rows))
