"""Raw Criteo text: streaming, validating, columnar reader.

Why this shape: the Kaggle file is 45.8M lines / 11 GB, so it is read in byte blocks cut at
line ends and parsed column-wise by polars (multi-threaded Rust) instead of line by line in
Python. Every block is checked in bulk; only a block that fails a bulk check is re-read line
by line, to name the exact line and field of the problem (or to drop and count bad lines).

Format: one row per line, 40 tab-separated fields: label (0/1), I1..I13 (integers, may be
negative, empty = missing), C1..C26 (8 lowercase hex digits, empty = missing). Plain text
or gzip, LF or CRLF line ends.
"""

from __future__ import annotations

import gzip
import logging
import queue
import re
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa

from deepfm_lib.data.schema import DataFormatError, FieldSpec, Schema

log = logging.getLogger(__name__)

N_DENSE = 13
N_CAT = 26
N_FIELDS = N_DENSE + N_CAT  # 39 model fields
N_COLUMNS = 1 + N_FIELDS  # 40 text columns: label first
DENSE_NAMES: tuple[str, ...] = tuple(f"I{i + 1}" for i in range(N_DENSE))
CAT_NAMES: tuple[str, ...] = tuple(f"C{i + 1}" for i in range(N_CAT))
COLUMN_NAMES: tuple[str, ...] = ("label", *DENSE_NAMES, *CAT_NAMES)
SCHEMA = Schema(
    "criteo",
    tuple(FieldSpec(n, "numeric") for n in DENSE_NAMES)
    + tuple(FieldSpec(n, "categorical") for n in CAT_NAMES),
    label="column 1: clicked (1) or not (0)",
)
BAD_LINE_REASONS: tuple[str, ...] = ("field_count", "label", "dense", "hash")
ON_BAD_LINE = ("error", "skip")

_GZIP_MAGIC = b"\x1f\x8b"
_BYTES_PER_LINE_GUESS = 256
_SAMPLE_BYTES = 1 << 20  # bytes of each block sampled to estimate the line length
_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)

# A quick whole-line filter for the common, valid case; per-field checks diagnose the rest.
_DENSE_RE = rb"(?:-?[0-9]{1,18})?"
_HASH_RE = rb"(?:[0-9a-f]{8})?"
_LINE_RE = re.compile(
    rb"[01]" + (rb"\t" + _DENSE_RE) * N_DENSE + (rb"\t" + _HASH_RE) * N_CAT + rb"\r?"
)
_DENSE_FIELD_RE = re.compile(rb"-?[0-9]+")
_HASH_FIELD_RE = re.compile(rb"[0-9a-f]{8}")


class CriteoFormatError(DataFormatError):
    """Bad Criteo input, with the file, the 1-based line number and the field to look at."""


@dataclass
class Chunk:
    """Parsed rows of one block of the file; missing values are 0 with a True mask."""

    label: np.ndarray  # uint8 (n,)
    # 2-D arrays are (n, fields) views of field-major (Fortran-ordered) storage.
    dense: np.ndarray  # int64 (n, 13)
    dense_missing: np.ndarray  # bool (n, 13)
    cat: np.ndarray  # uint32 (n, 26): the hash as a number
    cat_missing: np.ndarray  # bool (n, 26)
    line: np.ndarray  # int64 (n,): 1-based physical line number of each row
    lines_seen: int  # physical lines covered by this block, bad ones included
    bad_lines: dict[str, int] = field(default_factory=dict)  # reason -> count, this block

    @property
    def rows(self) -> int:
        return int(self.label.shape[0])


def _open_binary(stack: ExitStack, path: Path) -> tuple[BinaryIO, bool]:
    """Open plain or gzip text by its magic bytes, not its name."""
    raw = stack.enter_context(open(path, "rb"))
    magic = raw.read(2)
    raw.seek(0)
    if magic == _GZIP_MAGIC:
        return stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")), True
    return raw, False


def _blocks(fh: BinaryIO, path: Path, chunk_rows: int) -> Iterator[bytes]:
    """Yield the text as blocks of whole lines, about chunk_rows lines each (the last block
    may lack its line end).

    The parser counts the lines exactly (it reads every byte anyway); here the line length
    is only estimated, from the first MiB of each block, to size the next read.
    """
    bytes_per_line = _BYTES_PER_LINE_GUESS
    buf = bytearray(0)  # reused: only the bytes handed out are fresh memory
    kept = 0  # bytes of an unfinished line carried over to the front of buf
    while True:
        want = max(1 << 16, chunk_rows * bytes_per_line)
        if len(buf) < kept + want:
            grown = bytearray(kept + want)
            grown[:kept] = buf[:kept]
            buf = grown
        try:
            got = fh.readinto(memoryview(buf)[kept : kept + want])
        except EOFError as exc:
            raise CriteoFormatError(
                path, None, None, f"truncated gzip stream ({exc}); the file is incomplete"
            ) from exc
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise CriteoFormatError(path, None, None, f"corrupt gzip stream ({exc})") from exc
        filled = kept + got
        if not got:
            if kept:
                yield bytes(memoryview(buf)[:kept])
            return
        end = buf.rfind(b"\n", 0, filled) + 1
        if end == 0:
            kept = filled
            continue
        sample = min(end, _SAMPLE_BYTES)
        bytes_per_line = max(16, sample // max(1, buf.count(b"\n", 0, sample)))
        yield bytes(memoryview(buf)[:end])
        tail = bytes(buf[end:filled])
        kept = len(tail)
        buf[:kept] = tail


MISSING_DENSE = _INT64_MIN  # a missing dense value; never a valid one (see diagnose_line)
# A categorical value is keyed by its 8 ASCII bytes read as a little-endian int64: no hex
# decoding, and equal keys <=> equal hashes. A missing value is key 0 (no hash has a zero
# byte), which is also what polars stores for an empty string, so it needs no replacing.
MISSING_KEY = 0
_BYTE_LOW = np.int64(0x3030303030303030)  # "00000000": every hex digit byte is >= 0x30
_BYTE_HIGH = np.int64(0x0080808080808080) | np.int64(_INT64_MIN)  # 0x8080..80

# The bytes a field may hold. Deleting them from a valid block leaves exactly one line
# shape per line: 39 tabs and the line end (see _count_lines).
_FIELD_BYTES = b"0123456789abcdef-"
_LINE_SHAPES = (b"\t" * (N_COLUMNS - 1) + b"\n", b"\t" * (N_COLUMNS - 1) + b"\r\n")
_shape_runs: dict[bytes, bytes] = {}  # line shape -> that shape repeated, grown on demand
# The column types handed to polars (hashes as strings: read back as raw 8-byte keys).
_POLARS_SCHEMA = {
    "label": pl.String,
    **{n: pl.Int64 for n in DENSE_NAMES},
    **{n: pl.String for n in CAT_NAMES},
}
_HEX_LUT = np.full(256, 255, dtype=np.uint8)  # byte -> nibble value
_HEX_LUT[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX_LUT[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def key_to_hash(keys: np.ndarray) -> np.ndarray:
    """int64 keys (8 ASCII hex digits) -> uint32 hash values; MISSING_KEY -> 0."""
    keys = np.ascontiguousarray(keys, dtype="<i8")
    nibbles = _HEX_LUT[keys.view(np.uint8)].reshape(*keys.shape, 8).astype(np.uint32)
    nibbles[keys == MISSING_KEY] = 0
    shifts = np.arange(28, -1, -4, dtype=np.uint32)  # the first digit is the highest
    return (nibbles << shifts).sum(axis=-1, dtype=np.uint32)


@dataclass
class Block:
    """A parsed block in the form preprocessing consumes (field-major, sentinels)."""

    label: np.ndarray  # uint8 (n,)
    dense: np.ndarray  # int64 (13, n), MISSING_DENSE where empty
    keys: np.ndarray  # int64 (26, n): the value's 8 bytes (see MISSING_KEY)
    # Per dense field: min(0, smallest value) and max(0, largest value) of the block, the
    # zoo's running min/max (both start at 0); polars computes them while it has the column.
    dense_min: np.ndarray  # int64 (13,)
    dense_max: np.ndarray  # int64 (13,)

    @property
    def rows(self) -> int:
        return int(self.label.shape[0])


def polars_frame(source: bytes | str | Path) -> pl.DataFrame:
    """polars' parse of raw Criteo text with this reader's column types, and no checks.

    Lenient where the format is strict (see _fast_parse): use read_blocks for data; this is
    the bare library call, which benchmarks/preprocess.py times as a floor. Empty hashes
    read as empty strings, not nulls, so that hash columns have no validity bitmaps.
    """
    return pl.read_csv(
        source,
        separator="\t",
        has_header=False,
        new_columns=list(COLUMN_NAMES),
        schema=_POLARS_SCHEMA,
        quote_char=None,
        empty_string_is_null=False,
    )


def _count_lines(data: bytes) -> int | None:
    """The number of lines in data if each has exactly 40 fields made of field bytes only
    (LF or CRLF line ends, the same throughout), else None.

    One pass deletes every field byte; what is left must be the line shape repeated. This
    checks the bytes (polars reads '+5' and ' 5' as integers), the field count of every
    line (polars fills missing trailing fields) and counts the lines, all at once.
    """
    rest = data.translate(None, _FIELD_BYTES)
    for shape in _LINE_SHAPES:
        n, extra = divmod(len(rest), len(shape))
        if extra:
            continue
        run = _shape_runs.get(shape, b"")
        if len(run) < len(rest):
            run = _shape_runs[shape] = shape * (2 * n)
        if run.startswith(rest):
            return n
    return None


def _fast_parse(data: bytes) -> Block | None:
    """Columnar parse of data (whole lines); None when anything is off.

    polars' CSV reader (multi-threaded Rust) is lenient where the format is strict, so the
    block must first pass the byte-level check of _count_lines. What that leaves is checked
    on polars' columns: labels exactly "0" or "1"; dense values that parse as int64 (not
    the sentinel); hashes of 0 or 8 bytes without a '-' (the one field byte that is not a
    hex digit).
    """
    n_lines = _count_lines(data)
    if n_lines is None:
        return None
    try:
        df = polars_frame(data)
    except pl.exceptions.PolarsError:
        return None
    if df.height != n_lines:
        return None
    label_ok, *extremes = df.select(
        ((pl.col("label") == "0") | (pl.col("label") == "1")).all(),
        *(pl.col(n).min().alias(f"min_{n}") for n in DENSE_NAMES),
        *(pl.col(n).max().alias(f"max_{n}") for n in DENSE_NAMES),
    ).row(0)
    extremes = np.array([0 if v is None else v for v in extremes], dtype=np.int64)
    if not label_ok or extremes[:N_DENSE].min() == MISSING_DENSE:
        return None
    keys = np.empty((N_CAT, n_lines), dtype=np.int64)
    table = df.select(CAT_NAMES).to_arrow(compat_level=pl.CompatLevel.newest())
    for f in range(N_CAT):
        if not _hash_keys(table.column(f).chunks, keys[f]):
            return None
    label = (df.get_column("label") == "1").to_numpy().view(np.uint8)
    dense = df.select(pl.col(n).fill_null(MISSING_DENSE) for n in DENSE_NAMES).to_numpy(
        order="fortran"
    )
    return Block(
        label,
        dense.T,
        keys,
        np.minimum(extremes[:N_DENSE], 0),
        np.maximum(extremes[N_DENSE:], 0),
    )


# Arrow's string_view layout: 16 bytes per value, a string of up to 12 bytes inline (zero
# padded, so an empty string's 8 key bytes are 0: MISSING_KEY).
_VIEW = np.dtype([("len", "<i4"), ("key", "<i8"), ("rest", "<i4")])


def _hash_keys(chunks: list[pa.Array], out: np.ndarray) -> bool:
    """Fill out with the keys of a hash column; False if a value is not 0 or 8 bytes or
    holds a '-'.

    Reads the 8 bytes straight from the Arrow string views, chunk by chunk (no per-value
    conversion, no concatenation).
    """
    for a in chunks:
        if not pa.types.is_string_view(a.type) or a.buffers()[1] is None:
            raise RuntimeError(
                f"polars {pl.__version__} returned {a.type} for a hash column; this reader "
                "reads Arrow string views, as the pinned polars returns"
            )
        if a.null_count:  # a missing field: _count_lines lets none through
            return False
    at = 0
    for a in chunks:
        n = len(a)
        views = np.frombuffer(a.buffers()[1], dtype=_VIEW, count=a.offset + n)[a.offset :]
        if ((views["len"] | 8) != 8).any():
            return False
        out[at : at + n] = views["key"]
        at += n
    return _field_bytes_only(out)


def _field_bytes_only(keys: np.ndarray) -> bool:
    """No key but MISSING_KEY has a byte below "0" (a '-': the only such field byte).

    Subtracting "00000000" sets a byte's top bit exactly when that byte is below 0x30
    (every byte is below 0x80 here: the block passed _count_lines).
    """
    low = ((keys - _BYTE_LOW) & _BYTE_HIGH) != 0
    low &= keys != MISSING_KEY
    return not low.any()


def diagnose_line(line: bytes) -> tuple[str, str, str] | None:
    """(reason, field, message) for the first problem in one line (no line end), else None."""
    if line.endswith(b"\r"):
        line = line[:-1]
    fields = line.split(b"\t")
    if len(fields) != N_COLUMNS:
        return (
            "field_count",
            "fields",
            f"expected {N_COLUMNS} tab-separated fields (label, I1..I13, C1..C26), "
            f"found {len(fields)}",
        )
    if fields[0] not in (b"0", b"1"):
        return "label", "label", f"label must be 0 or 1, found {fields[0][:20]!r}"
    for name, value in zip(DENSE_NAMES, fields[1 : 1 + N_DENSE], strict=True):
        if value and (
            not _DENSE_FIELD_RE.fullmatch(value) or not _INT64_MIN < int(value) <= _INT64_MAX
        ):
            return "dense", name, f"expected an integer or empty, found {value[:20]!r}"
    for name, value in zip(CAT_NAMES, fields[1 + N_DENSE :], strict=True):
        if value and not _HASH_FIELD_RE.fullmatch(value):
            return ("hash", name, f"expected 8 lowercase hex digits or empty, found {value[:20]!r}")
    return None


def _slow_block(
    block: bytes, first_line: int, path: Path, on_bad_line: str
) -> tuple[bytes, np.ndarray, Counter]:
    """Find bad lines one by one: raise on the first, or drop them and count by reason."""
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    keep: list[bytes] = []
    keep_no: list[int] = []
    bad: Counter = Counter()
    match = _LINE_RE.fullmatch
    for k, line in enumerate(lines):
        if not match(line):
            problem = diagnose_line(line)
            if problem is not None:
                reason, name, message = problem
                if on_bad_line == "error":
                    raise CriteoFormatError(path, first_line + k, name, message)
                bad[reason] += 1
                continue
        keep.append(line.rstrip(b"\r"))
        keep_no.append(first_line + k)
    cleaned = b"\n".join(keep) + b"\n" if keep else b""
    return cleaned, np.asarray(keep_no, dtype=np.int64), bad


_DONE = object()


PARSE_THREADS = 2  # blocks parsed at once (polars and numpy release the GIL)


def _parse_block(data: bytes) -> tuple[Block | None, bytes | None, int]:
    parsed = _fast_parse(data)
    if parsed is not None:
        return parsed, None, parsed.rows
    return None, data, data.count(b"\n") + (not data.endswith(b"\n"))


def _parsed_blocks(path: Path, chunk_rows: int) -> Iterator[tuple]:
    """(Block or None, block bytes when Block is None, lines), in file order.

    A thread reads blocks and hands each to a pool of PARSE_THREADS parser threads, so the
    next blocks are parsed while the caller works on the current one. At most
    PARSE_THREADS + 1 blocks are in memory at once (queued or being parsed, and the
    caller's).
    """
    results: queue.Queue = queue.Queue(maxsize=PARSE_THREADS - 1 or 1)
    stop = threading.Event()
    pool = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="criteo-parse")

    def put(item) -> bool:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with ExitStack() as stack:
                fh, is_gz = _open_binary(stack, path)
                seen = False
                for data in _blocks(fh, path, chunk_rows):
                    seen = True
                    if not put(pool.submit(_parse_block, data)):
                        return
                if not seen:
                    kind = "gzip file decompresses to nothing" if is_gz else "file is empty"
                    raise CriteoFormatError(path, None, None, f"{kind}: no Criteo rows to read")
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = threading.Thread(target=produce, name="criteo-read", daemon=True)
    worker.start()
    try:
        while True:
            item = results.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item.result()
    finally:
        stop.set()
        worker.join()
        pool.shutdown(wait=True, cancel_futures=True)


def _check_args(path: Path, chunk_rows: int, on_bad_line: str) -> None:
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"on_bad_line must be one of {ON_BAD_LINE}, got {on_bad_line!r}")
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected Criteo raw text, plain or .gz)")


_EMPTY_BLOCK = Block(
    np.zeros(0, np.uint8),
    np.zeros((N_DENSE, 0), np.int64),
    np.zeros((N_CAT, 0), np.int64),
    np.zeros(N_DENSE, np.int64),
    np.zeros(N_DENSE, np.int64),
)


def read_blocks(
    path: Path | str, chunk_rows: int = 262_144, on_bad_line: str = "error"
) -> Iterator[tuple[Block, np.ndarray, int, dict[str, int]]]:
    """Stream the file as (Block, 1-based line number per row, physical lines, bad lines
    by reason) per block of roughly chunk_rows lines; see read_chunks."""
    path = Path(path)
    _check_args(path, chunk_rows, on_bad_line)
    next_line = 1
    for parsed, raw, n_lines in _parsed_blocks(path, chunk_rows):
        line_no = np.arange(next_line, next_line + n_lines, dtype=np.int64)
        bad: Counter = Counter()
        if parsed is None:
            cleaned, line_no, bad = _slow_block(raw, next_line, path, on_bad_line)
            parsed = _fast_parse(cleaned) if len(line_no) else None
            if parsed is None and len(line_no):
                raise RuntimeError(
                    f"{path}: lines {next_line}..{next_line + n_lines - 1} "
                    "passed the line checks but not the columnar parse"
                )
            if bad:
                log.warning(
                    "%s: lines %d..%d: skipped %s",
                    path,
                    next_line,
                    next_line + n_lines - 1,
                    dict(bad),
                )
        next_line += n_lines
        yield (parsed if parsed is not None else _EMPTY_BLOCK), line_no, n_lines, dict(bad)


def read_chunks(
    path: Path | str, chunk_rows: int = 262_144, on_bad_line: str = "error"
) -> Iterator[Chunk]:
    """Stream the file as parsed Chunks of roughly chunk_rows rows each.

    on_bad_line="error" raises CriteoFormatError at the first bad line; "skip" drops bad
    lines and reports them per chunk in Chunk.bad_lines. Memory is bounded by a few blocks.
    """
    for block, line_no, n_lines, bad in read_blocks(path, chunk_rows, on_bad_line):
        dense_missing = block.dense == MISSING_DENSE
        cat_missing = block.keys == MISSING_KEY
        yield Chunk(
            block.label,
            np.where(dense_missing, 0, block.dense).T,
            dense_missing.T,
            key_to_hash(block.keys).T,
            cat_missing.T,
            line=line_no,
            lines_seen=n_lines,
            bad_lines=bad,
        )
