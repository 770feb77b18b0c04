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

from deepfm_lib.data.criteo import N_DENSE, N_FIELDS

log = logging.getLogger(__name__)

# One MindRecord record holds a block of rows (1000 in the zoo's layout) as a single bytes
# field: MindRecord's cost is per field of a record, so one field writes about twice as fast
# as the zoo's three (feat_ids, feat_vals, label). The blob is, little-endian and row-major:
# ids int32 (n, 39), the 13 dense weights float32 (n, 13), labels float32 (n,). Categorical
# weights are always 1 under both protocols, so they are not stored.
SCHEMA = {"record": {"type": "bytes"}}
COLUMNS = list(SCHEMA)
ROW_BYTES = 4 * (N_FIELDS + N_DENSE + 1)
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
    return stats


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


def encode_record(ids: np.ndarray, dense_weights: np.ndarray, labels: np.ndarray) -> bytes:
    """One record's blob from ids (n, 39), dense weights (n, 13) and labels (n,)."""
    return b"".join(
        (
            np.asarray(ids, dtype="<i4").tobytes(order="C"),
            np.asarray(dense_weights, dtype="<f4").tobytes(order="C"),
            np.asarray(labels, dtype="<f4").tobytes(),
        )
    )


def decode_record(blob: bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One record as (ids int32 (n, 39), weights float32 (n, 39), labels float32 (n, 1)).

    MindDataset hands a bytes field over as a one-element bytes array; plain bytes work too.
    """
    raw = np.frombuffer(blob, dtype=np.uint8)
    n, extra = divmod(raw.size, ROW_BYTES)
    if extra:
        raise ValueError(
            f"malformed record: {raw.size} bytes is not a whole number of "
            f"{ROW_BYTES}-byte rows (ids, dense weights, label)"
        )
    ids_end, dense_end = 4 * N_FIELDS * n, 4 * (N_FIELDS + N_DENSE) * n
    ids = raw[:ids_end].view("<i4").astype(np.int32, copy=False).reshape(n, N_FIELDS)
    vals = np.ones((n, N_FIELDS), dtype=np.float32)
    vals[:, :N_DENSE] = raw[ids_end:dense_end].view("<f4").reshape(n, N_DENSE)
    labels = raw[dense_end:].view("<f4").astype(np.float32).reshape(n, 1)
    return ids, vals, labels


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
    for (blob,) in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        yield decode_record(blob)


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
