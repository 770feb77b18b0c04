"""Raw Criteo text -> MindRecord shards plus stats.json, under two protocols.

`zoo` follows the MindSpore model zoo's src/preprocess_data.py line for line in effect
(statistics over all rows, its seeded block split, trailing partial block dropped); `clean`
fixes its known flaws (statistics from training rows only, a validation split, nothing
dropped). See QUIRKS for what exactly the zoo does.

How it runs, and why: the text is parsed once (the costly part; polars on two threads, see
criteo.py) and spilled to a compact binary file per column beside the output, with each
categorical value replaced by its index in a running first-appearance dictionary.
Statistics, vocabulary and the split are then computed from the spill, and the MindRecord
files are written from it, one process per output file, because MindRecord's writer is
CPU-bound and holds the GIL. Those processes are forked from a writer host process started
before parsing, which imports MindSpore (about 2 s of CPU) while the parent parses.
A record is one bytes field (see deepfm_lib.data.dataset.SCHEMA): MindRecord's cost is per
field, and it re-encodes int32 arrays element by element. Memory stays bounded by a few
blocks plus the dictionary of distinct values, and a few bytes per row for the split.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pandas._libs.hashtable import Int64Factorizer  # incremental hash factorizer (C)
from tqdm import tqdm

from deepfm_lib.config import PreprocessParams
from deepfm_lib.data.criteo import (
    BAD_LINE_REASONS,
    CAT_NAMES,
    DENSE_NAMES,
    MISSING_DENSE,
    MISSING_KEY,
    N_CAT,
    N_DENSE,
    N_FIELDS,
    ON_BAD_LINE,
    Block,
    CriteoFormatError,
    key_to_hash,
    read_blocks,
)
from deepfm_lib.data.criteo import (
    SCHEMA as CRITEO,
)
from deepfm_lib.data.dataset import SCHEMA, close_writer, encode_record, open_writer, run_lengths
from deepfm_lib.io import make_temp_dir, replace_dir

log = logging.getLogger(__name__)

_MISSING_DENSE = MISSING_DENSE  # spill sentinel; never a valid value
_SPLIT_CODE = {"train": 0, "valid": 1, "test": 2}
_DROPPED = 255
_RECORDS_PER_WRITE = 64

QUIRKS_ZOO = [
    "Dense field i gets id i and weight x / max_i, max_i the largest value over ALL rows "
    "(test rows included), starting from 0; no log transform and no clipping; negative "
    "values give negative weights; an empty value gets id i and weight 0.",
    "A field whose maximum is 0 would divide by zero in the zoo; here its weights are 0.",
    "Categorical counts and the vocabulary come from ALL rows, test rows included; the "
    "empty string is counted as a value like any other.",
    "A categorical value is kept when seen strictly more than `threshold` times; ids 13..38 "
    "are the per-field OOV ids; kept values follow field by field (C1..C26), each field's "
    "values in order of first appearance in the file.",
    "Test split: a numpy RandomState(split_seed) shuffle of 0..L-1 (L = physical lines of "
    "the file; the zoo hard-codes 45,840,617, Criteo's line count) marks int(L * "
    "test_fraction) line indices as test; rows are grouped in blocks closed at every "
    "line number that is a multiple of rows_per_record, and a whole block goes to test "
    "when the 0-based index of its closing line is marked, so test gets ~10% of blocks, "
    "not exactly 10% of rows.",
    "The rows after the last closing line (the trailing partial block) are dropped.",
    "Line numbers count skipped bad lines too, and a block whose closing line is bad is "
    "not closed there: it runs on to the next multiple (a record of up to 2x rows).",
    "The test split is the one scored every epoch (there is no separate validation split).",
    "Each MindRecord record holds one block of rows, as the zoo's do, but as one bytes "
    "field 'record' (little-endian, row-major: ids int32 rows x 39, the 13 dense weights "
    "float32 rows x 13, labels float32) instead of the zoo's feat_ids / feat_vals / label "
    "columns; categorical weights, always 1, are not stored. MindRecord writes one field "
    "about twice as fast as three; deepfm_lib.data.dataset.decode_record gives the zoo's "
    "(ids, weights, labels) back.",
]
QUIRKS_CLEAN = [
    "Seeded row-level split of the physical lines (numpy default_rng(split_seed) "
    "permutation) into train / valid / test; bad lines drop out of their split.",
    "Dense maxima, categorical counts and the threshold use the training rows only; values "
    "not kept from train (including values never seen in train) map to their field's OOV id.",
    "Dense transform (setting dense): max as in the zoo, weight x / max_i (train max), no "
    "log, no clipping, values above the train max give weights above 1; or log1p, weight "
    "log1p(x) / log1p(max_i) with negative values taken as 0. A zero max gives weight 0.",
    "Kept values get ids field by field in order of first appearance in the whole file "
    "(ids are labels only; the order carries no statistics).",
    "No rows are dropped: each split's last record may be partial.",
    "valid is scored every epoch; test is scored once at the end.",
]


# ---------------------------------------------------------------- pass 1: parse and spill


class _Spill:
    """Column files appended chunk by chunk and read back by row range.

    2-D columns are stored one file per field, so that pass 1 appends contiguous field
    vectors and the (parallel) writers pay for assembling rows. Range reads use np.fromfile
    and row gathers a short-lived mapping, so that pages read once do not stay mapped.
    """

    COLUMNS = {
        "label": (np.uint8, 0),
        "dense": (np.int64, N_DENSE),
        "cidx": (np.uint32, N_CAT),
    }

    def __init__(self, folder: Path, rows: int = 0) -> None:
        self.folder = folder
        self.rows = rows
        self._fh: dict = {}

    def _files(self, name: str) -> list[Path]:
        width = self.COLUMNS[name][1]
        if width == 0:
            return [self.folder / f"{name}.bin"]
        return [self.folder / f"{name}{i}.bin" for i in range(width)]

    def create(self) -> _Spill:
        self.folder.mkdir()
        self._fh = {name: [open(p, "wb") for p in self._files(name)] for name in self.COLUMNS}
        return self

    def append(self, **arrays: np.ndarray | list[np.ndarray]) -> None:
        """Multi-field columns come field-major: (fields, rows), or one vector per field."""
        for name, arr in arrays.items():
            dtype, width = self.COLUMNS[name]
            vectors = [arr] if width == 0 else arr
            for fh, vec in zip(self._fh[name], vectors, strict=True):
                np.ascontiguousarray(vec, dtype=dtype).tofile(fh)
        self.rows += len(arrays["label"])

    def close(self) -> None:
        for handles in self._fh.values():
            for fh in handles:
                fh.close()

    def read_fields(self, name: str, start: int = 0, stop: int | None = None) -> list[np.ndarray]:
        """Rows [start, stop), one vector per field (one vector for 1-D columns)."""
        dtype = self.COLUMNS[name][0]
        stop = self.rows if stop is None else min(stop, self.rows)
        count = max(0, stop - start)
        offset = start * np.dtype(dtype).itemsize
        return [np.fromfile(p, dtype=dtype, count=count, offset=offset) for p in self._files(name)]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of a 1-D column."""
        return self.read_fields(name, start, stop)[0]

    def gather_fields(self, name: str, rows: np.ndarray) -> list[np.ndarray]:
        """The given rows (sorted indices), one vector per field.

        The files are mapped only for the duration of the call, so that only the pages of
        these rows are touched and none stay mapped: a writer's rows are spread over the
        spill (every shards-th record of its split), and reading whole ranges with
        np.fromfile copied several times the data it used.
        """
        dtype = self.COLUMNS[name][0]
        out = []
        for path in self._files(name):
            with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                mapped = np.frombuffer(mm, dtype=dtype, count=self.rows)
                out.append(mapped[rows])
                del mapped  # the mapping cannot close while an array views it
        return out


class _CountsWhileParsing:
    """Counts per value and dense min/max (both starting at 0, as the zoo's), accumulated
    block by block while parsing, for the zoo protocol's fit over all rows (this saves a
    second pass over the spill)."""

    def __init__(self) -> None:
        self.counts = [np.zeros(1 << 10, dtype=np.int64) for _ in range(N_CAT)]
        self.dmax = np.zeros(N_DENSE, dtype=np.int64)
        self.dmin = np.zeros(N_DENSE, dtype=np.int64)

    def add(self, codes: list[np.ndarray], block: Block) -> None:
        """codes: per field, the block's value indices as the factorizer returns them
        (intp, which np.bincount takes without a converted copy)."""
        for f in range(N_CAT):
            c = np.bincount(codes[f])
            if len(c) > len(self.counts[f]):
                grown = np.zeros(max(len(c), 2 * len(self.counts[f])), dtype=np.int64)
                grown[: len(self.counts[f])] = self.counts[f]
                self.counts[f] = grown
            self.counts[f][: len(c)] += c
        np.maximum(self.dmax, block.dense_max, out=self.dmax)
        np.minimum(self.dmin, block.dense_min, out=self.dmin)

    def result(self, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = np.concatenate([c[:n] for c, n in zip(self.counts, sizes.tolist(), strict=True)])
        return counts, self.dmin, self.dmax


def _parse_and_spill(
    raw_path: Path,
    spill: _Spill,
    on_bad_line: str,
    chunk_rows: int,
    progress: bool,
    fit: _CountsWhileParsing | None = None,
) -> tuple[int, dict[str, int], np.ndarray, np.ndarray]:
    """One pass over the text. Returns (physical lines, bad lines by reason, distinct values
    per field, the skipped lines' numbers); with `fit`, also counts values and dense
    min/max over all rows. Rows are the lines not skipped, in order, so their line numbers
    are not spilled (see _row_lines).

    Each categorical value is replaced by its index in its field's running dictionary
    (missing = its own value), so indices follow first appearance within the field. One
    hash table per field: several times faster than one table for all fields.
    """
    factorizers = [Int64Factorizer(1 << 10) for _ in range(N_CAT)]
    lines = 0
    bad = dict.fromkeys(BAD_LINE_REASONS, 0)
    skipped: list[np.ndarray] = []
    with tqdm(unit=" lines", unit_scale=True, desc="parse", disable=not progress) as bar:
        for block, line_no, n_lines, block_bad in read_blocks(
            raw_path, chunk_rows=chunk_rows, on_bad_line=on_bad_line
        ):
            if len(line_no) < n_lines:
                skipped.append(np.setdiff1d(np.arange(lines + 1, lines + n_lines + 1), line_no))
            lines += n_lines
            for reason, n in block_bad.items():
                bad[reason] += n
            codes = [fac.factorize(keys) for fac, keys in zip(factorizers, block.keys, strict=True)]
            spill.append(label=block.label, dense=block.dense, cidx=codes)
            if fit is not None:
                fit.add(codes, block)
            bar.update(n_lines)
    spill.close()
    # The distinct values, field by field in index order, for the vocabulary file.
    with open(spill.folder / "values.bin", "wb") as fh:
        for factorizer in factorizers:
            factorizer.uniques.to_array().tofile(fh)
    sizes = np.array([f.get_count() for f in factorizers], dtype=np.int64)
    del factorizers
    _release_free_memory()
    return lines, bad, sizes, np.concatenate([np.zeros(0, np.int64), *skipped])


def _row_lines(n_lines: int, skipped: np.ndarray) -> np.ndarray:
    """The 1-based line number of every spilled row."""
    lines = np.arange(1, n_lines + 1, dtype=np.int64)
    return np.delete(lines, skipped - 1) if len(skipped) else lines


def _release_free_memory() -> None:
    """Hand freed heap back to the OS (glibc keeps it per thread arena otherwise): the
    parse threads' freed blocks would stay in this process's memory while it writes."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# ---------------------------------------------------------------- split


def zoo_test_lines(n_lines: int, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over 0-based line indices: the zoo's test_indices_set.

    The zoo shuffles a Python list with the legacy global numpy RNG; RandomState.shuffle of
    an integer array makes the same swaps, far faster (checked in tests).
    """
    dtype = np.int32 if n_lines < 2**31 else np.int64
    order = np.arange(n_lines, dtype=dtype)
    np.random.RandomState(seed).shuffle(order)
    mask = np.zeros(n_lines, dtype=bool)
    mask[order[: int(n_lines * test_fraction)]] = True
    return mask


def _zoo_split(
    lines: np.ndarray, n_lines: int, cfg: PreprocessParams
) -> tuple[np.ndarray, np.ndarray]:
    """Per valid row: split code and block number, as the zoo's writer loop decides them."""
    rpr = cfg.rows_per_record
    closes = lines % rpr == 0  # a valid row whose line number is a multiple closes a block
    block = np.cumsum(closes) - closes  # number of blocks closed before this row
    n_blocks = int(closes.sum())
    test_line = zoo_test_lines(n_lines, cfg.test_fraction, cfg.split_seed)
    block_is_test = test_line[lines[closes] - 1]
    # Decided per block, then spread to rows with one gather each: the trailing partial
    # block (number n_blocks) is dropped; record numbers count within each split.
    block_split = np.full(n_blocks + 1, _DROPPED, dtype=np.uint8)
    block_split[:n_blocks] = np.where(block_is_test, _SPLIT_CODE["test"], _SPLIT_CODE["train"])
    block_record = np.full(n_blocks + 1, -1, dtype=np.int64)
    for sel in (block_is_test, ~block_is_test):
        block_record[:n_blocks][sel] = np.arange(int(sel.sum()))
    return block_split[block], block_record[block]


def _clean_split(
    lines: np.ndarray, n_lines: int, cfg: PreprocessParams
) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(cfg.split_seed).permutation(n_lines)
    n_test = int(n_lines * cfg.test_fraction)
    n_valid = int(n_lines * cfg.valid_fraction)
    by_line = np.zeros(n_lines, dtype=np.uint8)
    by_line[perm[:n_test]] = _SPLIT_CODE["test"]
    by_line[perm[n_test : n_test + n_valid]] = _SPLIT_CODE["valid"]
    split = by_line[lines - 1]
    record = np.empty(len(lines), dtype=np.int64)
    for code in (0, 1, 2):
        rows = split == code
        record[rows] = np.arange(int(rows.sum())) // cfg.rows_per_record
    return split, record


# ---------------------------------------------------------------- statistics and vocabulary


def _counts_over_rows(
    spill: _Spill, fit_rows: np.ndarray, offsets: np.ndarray, chunk: int = 1 << 18
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts per value (global index = field offset + index in field) and dense min/max
    (both starting at 0, as the zoo's) over the fit rows."""
    counts = np.zeros(int(offsets[-1]), dtype=np.int64)
    dmax = np.zeros(N_DENSE, dtype=np.int64)
    dmin = np.zeros(N_DENSE, dtype=np.int64)
    for start in range(0, spill.rows, chunk):
        sel = fit_rows[start : start + chunk]
        if not sel.any():
            continue
        for f, vec in enumerate(spill.read_fields("cidx", start, start + chunk)):
            lo, hi = offsets[f], offsets[f + 1]
            counts[lo:hi] += np.bincount(vec[sel], minlength=hi - lo)
        for i, vec in enumerate(spill.read_fields("dense", start, start + chunk)):
            d = np.where(vec[sel] == _MISSING_DENSE, 0, vec[sel])
            dmax[i] = max(dmax[i], d.max())
            dmin[i] = min(dmin[i], d.min())
    return counts, dmin, dmax


def _id_table(
    sizes: np.ndarray, counts: np.ndarray, threshold: int
) -> tuple[np.ndarray, list[int]]:
    """Global value index -> model id. Global indices run field by field, each field in
    first-appearance order, which is exactly the order kept values get their ids in."""
    field = np.repeat(np.arange(N_CAT), sizes)
    kept = counts > threshold
    ids = np.where(kept, N_FIELDS + np.cumsum(kept) - 1, N_DENSE + field).astype(np.int32)
    per_field = np.bincount(field[kept], minlength=N_CAT).tolist()
    return ids, per_field


VOCAB_FILE = "vocab.npy"
VOCAB_DTYPE = np.dtype([("field", "u1"), ("value", "<i8"), ("id", "<i4"), ("count", "<i8")])


def _save_vocabulary(
    path: Path, values_file: Path, sizes: np.ndarray, ids: np.ndarray, counts: np.ndarray
) -> None:
    """vocab.npy: one row per kept categorical value, in id order: field (0 = C1), the
    hash as a number (-1 for the empty value), its model id and its count. A value not in
    it maps to its field's OOV id 13 + field; dense field i has id i (see stats.json)."""
    kept = ids >= N_FIELDS
    rows = np.zeros(int(kept.sum()), dtype=VOCAB_DTYPE)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    at = 0
    for f in range(N_CAT):  # field by field: a field's values at a time in memory
        lo, hi = int(offsets[f]), int(offsets[f + 1])
        sel = np.flatnonzero(kept[lo:hi])
        keys = np.fromfile(values_file, dtype=np.int64, count=hi - lo, offset=lo * 8)[sel]
        part = rows[at : at + len(sel)]
        part["field"] = f
        part["value"] = np.where(keys == MISSING_KEY, -1, key_to_hash(keys).astype(np.int64))
        part["id"] = ids[lo:hi][sel]
        part["count"] = counts[lo:hi][sel]
        at += len(sel)
    np.save(path, rows, allow_pickle=False)


def load_vocabulary(data_dir: Path) -> dict[str, dict[str, int]]:
    """{"C1": {"68fd1e64": 39, "": 40, ...}, ...}: kept values (8 hex digits, "" for the
    empty value) to model ids, from a preprocessed folder's vocab.npy."""
    rows = np.load(Path(data_dir) / VOCAB_FILE, allow_pickle=False)
    out: dict[str, dict[str, int]] = {name: {} for name in CAT_NAMES}
    for field, value, id_ in zip(
        rows["field"].tolist(), rows["value"].tolist(), rows["id"].tolist(), strict=True
    ):
        out[CAT_NAMES[field]]["" if value < 0 else f"{value:08x}"] = id_
    return out


# ---------------------------------------------------------------- pass 2: write MindRecord


@dataclass(frozen=True)
class _WriteTask:
    split: str
    spill_dir: str
    spill_rows: int
    out_file: str
    split_code: int
    file_index: int
    shards: int
    table_file: str  # .npz with ids, dense_max
    dense: str  # PreprocessParams.dense


def _write_file(task: _WriteTask) -> int:
    """Write one MindRecord file, saying which and how much room was left if it fails.

    MindSpore reports a full disk only as "Failed to seekp file" from its C++ writer.
    """
    try:
        return _write_records(task)
    except RuntimeError as err:
        free = shutil.disk_usage(Path(task.out_file).parent).free
        detail = next((ln for ln in str(err).splitlines() if "ERROR" in ln), str(err))
        raise RuntimeError(
            f"{task.out_file}: writing this MindRecord shard failed with {free / 2**20:.0f} MiB "
            f"free on its file system (a full disk or a file size limit shows as "
            f"MindSpore's 'Failed to seekp file'); the previous output, if any, is kept. "
            f"MindSpore said: {detail.strip()}"
        ) from None


def _write_records(task: _WriteTask) -> int:
    """Records r of the split with r % shards == file_index, into one MindRecord file."""
    spill = _Spill(Path(task.spill_dir), task.spill_rows)
    meta = np.load(Path(task.spill_dir) / "split.npz")
    tables = np.load(task.table_file)
    id_of, dmax = tables["ids"], tables["dense_max"].astype(np.float64)
    offsets = tables["offsets"].astype(np.int64)
    rows = np.flatnonzero(
        (meta["split"] == task.split_code) & (meta["record"] % task.shards == task.file_index)
    )
    rec = meta["record"][rows]
    bounds = np.flatnonzero(np.diff(rec)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    ends = np.concatenate([bounds, [len(rows)]]).astype(np.int64)
    id_tables = [id_of[offsets[f] : offsets[f + 1]] for f in range(N_CAT)]

    writer = open_writer(task.out_file, len(rows), N_FIELDS, "CRITEO")
    for g in range(0, len(starts), _RECORDS_PER_WRITE):
        lo, hi = starts[g], ends[min(g + _RECORDS_PER_WRITE, len(starts)) - 1]
        sel = rows[lo:hi]
        m = len(sel)
        # Field-major arrays, filled field by field from the spill; each record's row-major
        # blob is made by transposing copies in encode_record.
        ids = np.empty((N_FIELDS, m), dtype="<i4")
        ids[:N_DENSE] = np.arange(N_DENSE, dtype=np.int32)[:, None]
        for f, vec in enumerate(spill.gather_fields("cidx", sel)):
            np.take(id_tables[f], vec, out=ids[N_DENSE + f])
        wts = np.zeros((N_DENSE, m), dtype=np.float32)
        for i, d in enumerate(spill.gather_fields("dense", sel)):
            if dmax[i] > 0 and task.dense == "log1p":
                x = np.log1p(np.maximum(d, 0)) / np.log1p(dmax[i])
                wts[i] = np.where(d == _MISSING_DENSE, 0.0, x)
            elif dmax[i] != 0:
                # float(x) / max in float64, then float32: the zoo's arithmetic, bit for bit.
                wts[i] = np.where(d == _MISSING_DENSE, 0.0, d / dmax[i])
        lab = spill.gather_fields("label", sel)[0]
        batch = [
            {
                "record": encode_record(
                    ids[:, s - lo : e - lo].T, wts[:, s - lo : e - lo].T, lab[s - lo : e - lo]
                )
            }
            for s, e in zip(
                starts[g : g + _RECORDS_PER_WRITE], ends[g : g + _RECORDS_PER_WRITE], strict=True
            )
        ]
        writer.write_raw_data(batch)
    close_writer(writer, task.out_file)
    return len(rows)


def _run_writes(tasks: list[_WriteTask], workers: int, progress: bool) -> None:
    import mindspore.mindrecord  # noqa: F401  (imported once, before forking the workers)

    if workers <= 1 or len(tasks) == 1:
        for task in tqdm(tasks, desc="write", unit="file", disable=not progress):
            _write_file(task)
        return
    # fork: workers share this process's memory and skip re-importing the library.
    ctx = mp.get_context("fork")
    with ctx.Pool(min(workers, len(tasks))) as pool:
        for _ in tqdm(
            pool.imap_unordered(_write_file, tasks),
            total=len(tasks),
            desc="write",
            unit="file",
            disable=not progress,
        ):
            pass


def _writer_host(conn, workers: int, progress: bool) -> None:
    """Body of the writer host process: import MindSpore, wait for the tasks, write."""
    try:
        import mindspore.mindrecord  # noqa: F401  (seconds of CPU: done while the parent parses)

        tasks = conn.recv()
        if tasks is None:
            return
        _run_writes(tasks, workers, progress)
        conn.send(None)
    except EOFError:  # the parent went away
        return
    except BaseException as exc:
        try:
            conn.send(exc)
        except Exception:  # e.g. an exception that does not pickle
            conn.send(RuntimeError(f"MindRecord writer failed: {exc!r}"))


class _WriterHost:
    """A process forked before parsing that imports MindSpore (about 2 s of CPU) while the
    parent parses, then forks the writer processes when the tasks arrive."""

    def __init__(self, workers: int, progress: bool) -> None:
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_writer_host, args=(child, workers, progress), name="mindrecord-writer"
        )
        self._proc.start()
        child.close()
        self._sent = False

    def run(self, tasks: list[_WriteTask]) -> None:
        self._sent = True
        self._conn.send(tasks)
        try:
            result = self._conn.recv()
        except EOFError:
            result = RuntimeError(
                f"MindRecord writer process exited with code {self._proc.exitcode} before reporting"
            )
        if result is not None:
            raise result

    def close(self) -> None:
        """Wait for the host after run(); before it (an error while parsing), stop it: it
        has done nothing but import MindSpore."""
        if not self._sent and self._proc.is_alive():
            self._proc.terminate()
        self._conn.close()
        self._proc.join(timeout=60)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


# ---------------------------------------------------------------- entry point


def preprocess(
    raw_path: Path,
    out_dir: Path,
    cfg: PreprocessParams,
    *,
    score_test: Callable[[int, np.ndarray, np.ndarray], dict[str, Any]] | None = None,
    on_bad_line: str = "error",
    workers: int | None = None,
    chunk_rows: int = 131_072,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> dict:
    """Write out_dir/{split}.mindrecord* and out_dir/stats.json; return the stats dict.

    Atomic: everything is built in a temporary folder beside out_dir and renamed into place;
    on any error nothing is left behind. `on_bad_line`: "error" stops at the first bad line
    naming file, line and field; "skip" counts and drops it (stats.json's bad_lines).
    `workers` (default: CPU count) only changes speed.
    `timings`, if given, receives the wall seconds of each phase (parse_s, split_vocab_s,
    write_s); they stay out of stats.json, which is the same for the same input.
    `score_test`, if given, is called with the raw file's line count and the test rows'
    1-based lines and labels before the shards are written; what it returns goes into
    stats.json (the synthetic source's ceiling: deepfm_lib.data.oracle.TeacherScore).
    """
    phases = {} if timings is None else timings
    raw_path, out_dir = Path(raw_path), Path(out_dir)
    if not raw_path.is_file():
        raise FileNotFoundError(f"{raw_path}: no such file (expected Criteo raw text)")
    if on_bad_line not in ON_BAD_LINE:  # before any work: the writers import MindSpore
        raise ValueError(f"on_bad_line must be one of {ON_BAD_LINE}, got {on_bad_line!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    tmp = make_temp_dir(out_dir)
    host = _WriterHost(workers, progress)
    try:
        spill = _Spill(tmp / ".spill").create()
        t0 = time.perf_counter()
        # The zoo fits on all rows, so its counts are taken while parsing.
        parse_counts = _CountsWhileParsing() if cfg.protocol == "zoo" else None
        n_lines, bad, sizes, skipped = _parse_and_spill(
            raw_path, spill, on_bad_line, chunk_rows, progress, parse_counts
        )
        phases["parse_s"] = time.perf_counter() - t0
        log.info(
            "parsed %d lines (%d distinct categorical values) in %.1fs",
            n_lines,
            int(sizes.sum()),
            phases["parse_s"],
        )
        if spill.rows == 0:
            raise CriteoFormatError(
                raw_path, None, None, f"no valid rows among {n_lines} lines (bad lines: {bad})"
            )
        t0 = time.perf_counter()
        lines = _row_lines(n_lines, skipped)
        splitter = _zoo_split if cfg.protocol == "zoo" else _clean_split
        split, record = splitter(lines, n_lines, cfg)
        np.savez(spill.folder / "split.npz", split=split, record=record.astype(np.int32))
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        # The zoo counts every row (test and dropped rows too), as counted while parsing;
        # clean only the training rows.
        if parse_counts is not None:
            counts, dmin, dmax = parse_counts.result(sizes)
        else:
            counts, dmin, dmax = _counts_over_rows(spill, split == _SPLIT_CODE["train"], offsets)
        ids, per_field = _id_table(sizes, counts, cfg.threshold)
        np.savez(spill.folder / "tables.npz", ids=ids, dense_max=dmax, offsets=offsets)
        _save_vocabulary(tmp / VOCAB_FILE, spill.folder / "values.bin", sizes, ids, counts)
        phases["split_vocab_s"] = time.perf_counter() - t0
        log.info("split and vocabulary in %.1fs", phases["split_vocab_s"])

        labels = spill.read("label")
        splits: dict[str, dict] = {}
        tasks: list[_WriteTask] = []
        for name in cfg.splits:
            rows = split == _SPLIT_CODE[name]
            n, pos = int(rows.sum()), int(labels[rows].sum())
            if n == 0:
                raise ValueError(
                    f"{raw_path}: split {name!r} would be empty ({n_lines} lines, "
                    f"{spill.rows} valid rows, {cfg})"
                )
            rec_sizes = np.bincount(record[rows])
            # A split with fewer records than `shards` gets one file per record: MindRecord
            # files without records cannot be read back.
            n_files = min(cfg.shards, len(rec_sizes))
            files = [f"{name}.mindrecord{i}" for i in range(n_files)]
            splits[name] = {
                "rows": n,
                "positives": pos,
                "positive_rate": pos / n,
                "records": len(rec_sizes),
                "files": files,
                # rows per record, file by file, run-length encoded [rows, times]
                "record_rows": {f: run_lengths(rec_sizes[i::n_files]) for i, f in enumerate(files)},
            }
            tasks += [
                _WriteTask(
                    name,
                    str(spill.folder),
                    spill.rows,
                    str(tmp / f),
                    _SPLIT_CODE[name],
                    i,
                    n_files,
                    str(spill.folder / "tables.npz"),
                    cfg.dense,
                )
                for i, f in enumerate(files)
            ]
        tasks.sort(key=lambda t: -splits[t.split]["rows"])  # biggest files first
        # Not needed while the writers run (they read split.npz): ~16 B per row less.
        del record
        scored: dict[str, Any] = {}
        if score_test is not None:  # before the long part: a mismatched file fails early
            test = split == _SPLIT_CODE["test"]
            scored = score_test(n_lines, lines[test], labels[test])
        del lines
        t0 = time.perf_counter()
        host.run(tasks)
        phases["write_s"] = time.perf_counter() - t0
        log.info("wrote %d MindRecord files in %.1fs", len(tasks), phases["write_s"])

        dropped = int((split == _DROPPED).sum())
        stats = {
            "protocol": cfg.protocol,
            "settings": {**cfg.model_dump(), "on_bad_line": on_bad_line},
            "source": {"path": str(raw_path), "bytes": raw_path.stat().st_size},
            "lines_read": n_lines,
            "rows_read": spill.rows,
            "bad_lines": bad,
            "dropped_rows": dropped,
            "splits": splits,
            "eval_split": "test" if cfg.protocol == "zoo" else "valid",
            "final_split": "test",
            "data": CRITEO.to_json(),  # the fields and the row layout the models read
            "vocab_size": N_FIELDS + sum(per_field),
            "vocab_per_field": dict(zip(CAT_NAMES, per_field, strict=True)),
            "dense_max": dict(zip(DENSE_NAMES, dmax.tolist(), strict=True)),
            "dense_min": dict(zip(DENSE_NAMES, dmin.tolist(), strict=True)),
            "distinct_values_per_field": dict(zip(CAT_NAMES, sizes.tolist(), strict=True)),
            "quirks": QUIRKS_ZOO if cfg.protocol == "zoo" else QUIRKS_CLEAN,
            **scored,  # the synthetic source's ceiling (oracle_auc, oracle_parts), if scored
            "files": {name: s["files"] for name, s in splits.items()},
            "layout": "Each file is an independent single-shard MindRecord file (written in "
            "parallel); read a split by passing the list of its files to "
            "MindDataset (deepfm_lib.data.dataset.split_files), not its first file. "
            "Record r of a split is in file r % len(files). A record is one bytes field: "
            "ids int32 (rows, 39), dense weights float32 (rows, 13), labels float32 "
            "(rows), little-endian (deepfm_lib.data.dataset.decode_record).",
            "schema": SCHEMA,
            "vocabulary_file": VOCAB_FILE,
        }
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        shutil.rmtree(spill.folder)
        replace_dir(tmp, out_dir, "stats.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        host.close()
    log.info(
        "preprocessed %s -> %s: %s", raw_path, out_dir, {k: v["rows"] for k, v in splits.items()}
    )
    return stats
