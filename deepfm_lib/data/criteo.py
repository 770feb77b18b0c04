"""Raw Criteo text: streaming, validating, columnar reader.

Why this shape: the Kaggle file is 45.8M lines / 11 GB, so it is read in byte blocks cut at
line ends and parsed column-wise by pyarrow (multi-threaded C++) instead of line by line in
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
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

log = logging.getLogger(__name__)

N_DENSE = 13
N_CAT = 26
N_FIELDS = N_DENSE + N_CAT  # 39 model fields
N_COLUMNS = 1 + N_FIELDS  # 40 text columns: label first
DENSE_NAMES: tuple[str, ...] = tuple(f"I{i + 1}" for i in range(N_DENSE))
CAT_NAMES: tuple[str, ...] = tuple(f"C{i + 1}" for i in range(N_CAT))
COLUMN_NAMES: tuple[str, ...] = ("label", *DENSE_NAMES, *CAT_NAMES)
BAD_LINE_REASONS: tuple[str, ...] = ("field_count", "label", "dense", "hash")
ON_BAD_LINE = ("error", "skip")

_GZIP_MAGIC = b"\x1f\x8b"
_BYTES_PER_LINE_GUESS = 256
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

# byte -> nibble value, 255 for anything but 0-9a-f
_HEX_LUT = np.full(256, 255, dtype=np.uint8)
_HEX_LUT[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX_LUT[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


class CriteoFormatError(ValueError):
    """Bad input, with the file, the 1-based line number and the field to look at."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        where = self.path
        if line is not None:
            where += f": line {line}"
        if field is not None:
            where += f", field {field}"
        super().__init__(f"{where}: {reason}")


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


def _blocks(fh: BinaryIO, path: Path, chunk_rows: int) -> Iterator[tuple[bytearray, int, int]]:
    """Yield (buffer, end, lines): buffer[:end] holds whole lines, about chunk_rows of them.

    One buffer is reused for every block (fresh 60 MB allocations cost page faults), so a
    block is only valid until the next one is requested.
    """
    bytes_per_line = _BYTES_PER_LINE_GUESS
    buf = bytearray(0)
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
                yield buf, kept, 1
            return
        end = buf.rfind(b"\n", 0, filled) + 1
        if end == 0:
            kept = filled
            continue
        n_lines = buf.count(b"\n", 0, end)
        bytes_per_line = max(16, end // n_lines)
        yield buf, end, n_lines
        tail = bytes(buf[end:filled])
        kept = len(tail)
        buf[:kept] = tail


def _string_column(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths int64 (n,), value bytes uint8) of a non-null string column."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + n + 1)
    offsets = offsets[arr.offset :]
    data_buf = arr.buffers()[2]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    data = data[offsets[0] : offsets[-1]]
    return np.diff(offsets), data


def _int_column(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values with 0 where null, null mask) straight from the Arrow buffers."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n, off = len(arr), arr.offset
    values = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=off + n)[off:]
    if arr.null_count == 0:
        return values, np.zeros(n, dtype=bool)
    valid_bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    valid = np.unpackbits(valid_bits, count=off + n, bitorder="little")[off:].view(bool)
    return np.where(valid, values, 0), ~valid


def _decode_hashes(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
    """(uint32 values, missing mask), or None if any value is not empty or 8 hex digits."""
    lengths, data = _string_column(col)
    missing = lengths == 0
    if not np.all(missing | (lengths == 8)):
        return None
    nibbles = _HEX_LUT[data].reshape(-1, 8)
    if nibbles.size and nibbles.max() == 255:
        return None
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]  # (k, 4) bytes, big-endian order
    values = np.zeros(lengths.shape[0], dtype=np.uint32)
    values[~missing] = np.ascontiguousarray(packed).view(">u4").ravel()
    return values, missing


_READ_OPTS = dict(column_names=list(COLUMN_NAMES), use_threads=True, block_size=1 << 22)
_PARSE_OPTS = pacsv.ParseOptions(
    delimiter="\t",
    quote_char=False,
    double_quote=False,
    escape_char=False,
    newlines_in_values=False,
    ignore_empty_lines=False,
)
_CONVERT_OPTS = pacsv.ConvertOptions(
    column_types={
        "label": pa.string(),
        **{n: pa.int64() for n in DENSE_NAMES},
        **{n: pa.string() for n in CAT_NAMES},
    },
    null_values=[""],
    strings_can_be_null=False,
    check_utf8=False,
)


def _arrow_parse(buf: bytes | bytearray, end: int, n_lines: int) -> pa.Table | None:
    """Columnar parse of buf[:end]; None when anything is off (then diagnose line by line)."""
    # pyarrow's integer parser trims spaces and reads 0x.. as hex: keep those for the checks.
    if buf.find(b" ", 0, end) >= 0 or buf.find(b"x", 0, end) >= 0 or buf.find(b"X", 0, end) >= 0:
        return None
    try:
        table = pacsv.read_csv(
            pa.py_buffer(memoryview(buf)[:end]),
            read_options=pacsv.ReadOptions(**_READ_OPTS),
            parse_options=_PARSE_OPTS,
            convert_options=_CONVERT_OPTS,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_rows != n_lines:  # e.g. a lone CR, which pyarrow takes for a line end
        return None
    return table


def _fast_parse(buf: bytes | bytearray, end: int, n_lines: int) -> tuple | None:
    table = _arrow_parse(buf, end, n_lines)
    return None if table is None else _table_arrays(table)


def _table_arrays(table: pa.Table) -> tuple | None:
    """Checked numpy columns of a parsed block, or None if a value breaks the format."""
    lengths, data = _string_column(table.column("label"))
    if not np.all(lengths == 1):
        return None
    label = (data - np.uint8(ord("0"))).astype(np.uint8)
    if label.size and label.max() > 1:
        return None
    n = table.num_rows
    # Field-major storage (returned as (n, fields) views): columns are written and read
    # contiguously, here and by the per-field dictionaries downstream.
    dense = np.empty((N_DENSE, n), dtype=np.int64)
    dense_missing = np.empty((N_DENSE, n), dtype=bool)
    for i, name in enumerate(DENSE_NAMES):
        dense[i], dense_missing[i] = _int_column(table.column(name))
    if (dense == _INT64_MIN).any():  # reserved as a "missing" marker downstream
        return None
    cat = np.empty((N_CAT, n), dtype=np.uint32)
    cat_missing = np.empty((N_CAT, n), dtype=bool)
    for f, name in enumerate(CAT_NAMES):
        decoded = _decode_hashes(table.column(name))
        if decoded is None:
            return None
        cat[f], cat_missing[f] = decoded
    return label, dense.T, dense_missing.T, cat.T, cat_missing.T


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


def _parsed_blocks(path: Path, chunk_rows: int) -> Iterator[tuple]:
    """(arrays or None, block bytes when arrays is None, lines), parsed one block ahead.

    A thread reads and parses the next block (pyarrow and numpy mostly release the GIL)
    while the caller works on the current one: on two cores this hides much of the parse.
    """
    results: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

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
                for buf, end, n_lines in _blocks(fh, path, chunk_rows):
                    seen = True
                    parsed = _fast_parse(buf, end, n_lines)
                    raw = bytes(buf[:end]) if parsed is None else None
                    if not put((parsed, raw, n_lines)):
                        return
                if not seen:
                    kind = "gzip file decompresses to nothing" if is_gz else "file is empty"
                    raise CriteoFormatError(path, None, None, f"{kind}: no Criteo rows to read")
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = threading.Thread(target=produce, name="criteo-parse", daemon=True)
    worker.start()
    try:
        while True:
            item = results.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def read_chunks(
    path: Path | str, chunk_rows: int = 262_144, on_bad_line: str = "error"
) -> Iterator[Chunk]:
    """Stream the file as parsed Chunks of roughly chunk_rows rows each.

    on_bad_line="error" raises CriteoFormatError at the first bad line; "skip" drops bad
    lines and reports them per chunk in Chunk.bad_lines. Memory is bounded by two blocks.
    """
    path = Path(path)
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"on_bad_line must be one of {ON_BAD_LINE}, got {on_bad_line!r}")
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected Criteo raw text, plain or .gz)")
    next_line = 1
    for parsed, raw, n_lines in _parsed_blocks(path, chunk_rows):
        line_no = np.arange(next_line, next_line + n_lines, dtype=np.int64)
        bad: Counter = Counter()
        if parsed is None:
            cleaned, line_no, bad = _slow_block(raw, next_line, path, on_bad_line)
            parsed = _fast_parse(cleaned, len(cleaned), len(line_no)) if len(line_no) else None
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
        if parsed is None:
            parsed = (
                np.zeros(0, np.uint8),
                np.zeros((0, N_DENSE), np.int64),
                np.zeros((0, N_DENSE), bool),
                np.zeros((0, N_CAT), np.uint32),
                np.zeros((0, N_CAT), bool),
            )
        yield Chunk(*parsed, line=line_no, lines_seen=n_lines, bad_lines=dict(bad))
