"""MovieLens-100K: a real CTR-style data set no one here shaped, read from a pinned wheel.

The GroupLens terms forbid redistributing the data, so it is never committed or copied
into the repository: ``fetch`` downloads the ``recbole`` 1.2.1 wheel from the package index
with pip (it carries RecBole's atomic files of ml-100k), checks its sha256 and keeps it in
a cache outside git; ``preprocess`` reads the three files straight from the archive.
Cite: F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context",
ACM TiiS 5(4), 2015.

The protocol is RecBole's context-aware quick start on ml-100k: a rating at or above the
threshold (4) is a positive; the fields are user_id, item_id, the user's age, gender and
occupation, the film's release year and its genres (``class``, a token sequence). Ratings
of 3 may be dropped, as RecBole's ml-1m benchmark does. The split is a seeded random
80/10/10 of the ratings; vocabularies and OOV ids come from the training rows only.
RecBole also feeds the (normalised) timestamp; the study leaves it out, as the issue that
brought the data set in specifies.

A folder holding ml-100k.inter, .user and .item in the same format works in place of the
wheel (tests use generated files of that format, never the real rows).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepfm_lib.config import MovieLensParams, PreprocessParams
from deepfm_lib.data.dataset import SCHEMA as RECORD_SCHEMA
from deepfm_lib.data.dataset import write_split
from deepfm_lib.data.schema import DataFormatError, FieldSpec, Schema
from deepfm_lib.io import make_temp_dir, replace_dir

log = logging.getLogger(__name__)

WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
_IN_WHEEL = "recbole/dataset_example/ml-100k/"
FILES = {"inter": "ml-100k.inter", "user": "ml-100k.user", "item": "ml-100k.item"}
# The columns the protocol reads from each file (RecBole's load_col), by name before ':'.
COLUMNS = {
    "inter": ("user_id", "item_id", "rating"),
    "user": ("user_id", "age", "gender", "occupation"),
    "item": ("item_id", "release_year", "class"),
}
CATEGORICAL = ("user_id", "item_id", "age", "gender", "occupation", "release_year")
SEQUENCE = "class"  # the genres, space-separated tokens
QUIRKS = [
    "RecBole's context-aware protocol on ml-100k: label = rating >= label_threshold (4); "
    "fields user_id, item_id, age, gender, occupation, release_year and the genres (class); "
    "RecBole's normalised timestamp field is left out.",
    "Seeded random split of the ratings (numpy default_rng(split_seed) permutation) into "
    "train / valid / test by preprocess.valid_fraction and test_fraction (RecBole's RS "
    "0.8/0.1/0.1); with drop_neutral, ratings of 3 are dropped before the split.",
    "Values seen in training more than data.movielens.threshold times keep their own id; "
    "others (and values first seen in valid or test) map to their field's OOV id.",
    "The genres are one sequence field of up to `width` positions: each of a film's k "
    "genres has weight 1/k; unused positions hold the genre OOV id with weight 0.",
    "valid is scored every epoch; test is scored once at the end.",
]
CITATION = (
    'F. Maxwell Harper and Joseph A. Konstan. 2015. "The MovieLens Datasets: History and '
    'Context". ACM Transactions on Interactive Intelligent Systems 5(4): 19:1-19:19.'
)


def cache_dir() -> Path:
    """Where the wheel is kept: $DEEPFM_CACHE, else ~/.cache/deepfm-repro (never in git)."""
    root = os.environ.get("DEEPFM_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deepfm-repro"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(cache: Path | None = None) -> Path:
    """The pinned wheel in the cache, downloaded with pip if missing; its hash checked.

    The download lands in a temporary folder and is renamed into the cache only when its
    sha256 matches, so a failed or tampered download leaves nothing behind.
    """
    cache = cache_dir() if cache is None else Path(cache)
    wheel = cache / WHEEL
    if wheel.is_file():
        got = _sha256(wheel)
        if got == WHEEL_SHA256:
            return wheel
        raise ValueError(
            f"{wheel}: sha256 {got}, expected {WHEEL_SHA256} (pinned); delete the file and "
            "run `python -m deepfm_lib.data.movielens fetch` to download it again"
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "-d", tmp, WHEEL_REQUIREMENT]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        got_path = Path(tmp) / WHEEL
        if done.returncode != 0 or not got_path.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(
                f"could not download {WHEEL_REQUIREMENT} (MovieLens-100K) with pip into "
                f"{cache}: {' / '.join(tail) or 'no output'}. On a machine that reaches the "
                f"package index run `python -m deepfm_lib.data.movielens fetch`, or copy "
                f"{WHEEL} (sha256 {WHEEL_SHA256}) to {wheel}; or set data.source to synthetic"
            )
        got = _sha256(got_path)
        if got != WHEEL_SHA256:
            raise ValueError(
                f"{WHEEL_REQUIREMENT} from the package index has sha256 {got}, expected "
                f"{WHEEL_SHA256} (pinned); nothing was kept"
            )
        os.replace(got_path, wheel)
    return wheel


def locate(settings: MovieLensParams) -> Path:
    """The source: data.movielens.path (a folder or a wheel), else the cached pinned wheel."""
    if settings.path is None:
        return fetch()
    path = Path(settings.path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file or folder (data.movielens.path: a folder holding "
            f"{', '.join(FILES.values())}, or the {WHEEL} wheel; null fetches the wheel)"
        )
    return path


def _texts(source: Path) -> dict[str, tuple[str, str]]:
    """Each file's (name to cite in errors, text), from a folder or from the wheel."""
    out = {}
    if source.is_dir():
        for key, name in FILES.items():
            path = source / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: no such file (MovieLens-100K in RecBole's format)"
                )
            out[key] = (str(path), path.read_text(encoding="utf-8"))
        return out
    if _sha256(source) != WHEEL_SHA256:
        raise ValueError(f"{source}: not the pinned {WHEEL} (sha256 {WHEEL_SHA256})")
    with zipfile.ZipFile(source) as archive:
        for key, name in FILES.items():
            out[key] = (f"{source}:{_IN_WHEEL}{name}", archive.read(_IN_WHEEL + name).decode())
    return out


def _table(where: str, text: str, kind: str) -> dict[str, list[str]]:
    """The protocol's columns of one tab-separated atomic file with a typed header."""
    lines = text.splitlines()
    if not lines:
        raise DataFormatError(where, 1, None, "empty file: expected a header line")
    header = [h.split(":", 1)[0] for h in lines[0].split("\t")]
    for name in COLUMNS[kind]:
        if name not in header:
            raise DataFormatError(
                where, 1, name, f"missing column {name!r} (the header has {', '.join(header)})"
            )
    index = [header.index(name) for name in COLUMNS[kind]]
    columns: dict[str, list[str]] = {name: [] for name in COLUMNS[kind]}
    for number, line in enumerate(lines[1:], start=2):
        values = line.split("\t")
        if len(values) != len(header):
            raise DataFormatError(
                where, number, None, f"{len(values)} tab-separated values, the header has "
                f"{len(header)}",
            )  # fmt: skip
        for name, i in zip(COLUMNS[kind], index, strict=True):
            columns[name].append(values[i])
    return columns


def _ratings(where: str, values: list[str]) -> np.ndarray:
    try:
        ratings = np.array(values, dtype=np.float64)
    except ValueError:
        ratings = np.array([_number_or_nan(v) for v in values])
    bad = np.flatnonzero(~((ratings >= 1) & (ratings <= 5)))
    if len(bad):
        raise DataFormatError(
            where, int(bad[0]) + 2, "rating", f"{values[bad[0]]!r} is not a rating from 1 to 5"
        )
    return ratings


def _number_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _lookup(where: str, keys: list[str], table: dict[str, list[str]], field: str, what: str):
    """Row index in ``table`` of each key; an unknown key names its line in ``where``."""
    position: dict[str, int] = {}
    for i, key in enumerate(table[field]):
        if key in position:
            raise DataFormatError(what, i + 2, field, f"{key!r} appears twice")
        position[key] = i
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        j = position.get(key)
        if j is None:
            raise DataFormatError(where, i + 2, field, f"{key!r} is not in {what}")
        out[i] = j
    return out


@dataclass(frozen=True)
class Rows:
    """The joined ratings: one token per categorical field, a token list for the genres."""

    tokens: dict[str, np.ndarray]  # field -> str array (n,)
    genres: list[list[str]]
    ratings: np.ndarray
    lines: np.ndarray  # each row's 1-based line in ml-100k.inter


def read(source: Path) -> Rows:
    """Read, check and join the three files. Errors name the file, the line and the field."""
    texts = _texts(source)
    (inter_at, inter_text), (user_at, user_text), (item_at, item_text) = (
        texts["inter"],
        texts["user"],
        texts["item"],
    )
    inter = _table(inter_at, inter_text, "inter")
    users = _table(user_at, user_text, "user")
    items = _table(item_at, item_text, "item")
    ratings = _ratings(inter_at, inter["rating"])
    u = _lookup(inter_at, inter["user_id"], users, "user_id", user_at)
    i = _lookup(inter_at, inter["item_id"], items, "item_id", item_at)
    tokens = {
        "user_id": np.array(inter["user_id"]),
        "item_id": np.array(inter["item_id"]),
        **{f: np.array(users[f])[u] for f in ("age", "gender", "occupation")},
        "release_year": np.array(items["release_year"])[i],
    }
    film_genres = [g.split() for g in items[SEQUENCE]]
    genres = [film_genres[j] for j in i]
    return Rows(tokens, genres, ratings, np.arange(2, len(ratings) + 2))


def schema(genre_width: int) -> Schema:
    """MovieLens-100K's fields in row order: the genres first (their weights vary)."""
    return Schema(
        "movielens",
        (
            FieldSpec("genre", "sequence", genre_width),
            *(FieldSpec(f, "categorical") for f in CATEGORICAL),
        ),
        label="rating >= data.movielens.label_threshold (RecBole's threshold), else 0",
    )


def _split(n: int, cfg: PreprocessParams, seed: int) -> np.ndarray:
    """0 train, 1 valid, 2 test: a seeded permutation cut at the fractions (RecBole's RS)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * cfg.test_fraction))
    n_valid = int(round(n * cfg.valid_fraction))
    split = np.zeros(n, dtype=np.int8)
    split[order[n - n_test - n_valid : n - n_test]] = 1
    split[order[n - n_test :]] = 2
    return split


def _vocabulary(
    fields: list[str], values: list[np.ndarray], train: list[np.ndarray], threshold: int
) -> tuple[list[dict[str, int]], dict[str, int]]:
    """Ids of the values seen in training more than ``threshold`` times, field by field in
    sorted order after the ``len(fields)`` OOV ids (field f's OOV id is f)."""
    next_id = len(fields)
    maps, sizes = [], {}
    for name, column, in_train in zip(fields, values, train, strict=True):
        kept, counts = np.unique(column[in_train], return_counts=True)
        kept = kept[counts > threshold]
        maps.append({str(v): next_id + k for k, v in enumerate(kept)})
        sizes[name] = len(kept)
        next_id += len(kept)
    return maps, sizes


def _encode(
    rows: Rows, keep: np.ndarray, train: np.ndarray, threshold: int
) -> tuple[np.ndarray, np.ndarray, Schema, dict[str, int]]:
    """The kept rows as the models read them: ids (n, width) and the genres' weights
    (n, genre width), with the schema they follow and the kept values per field."""
    genres = [g for g, k in zip(rows.genres, keep, strict=True) if k]
    n = len(genres)
    width = max(1, max((len(g) for g in genres), default=0))
    layout = schema(width)
    flat = np.array([t for g in genres for t in g], dtype=str)
    token_row = np.repeat(np.arange(n), [len(g) for g in genres])
    maps, per_field = _vocabulary(
        ["genre", *CATEGORICAL],
        [flat, *(rows.tokens[f][keep] for f in CATEGORICAL)],
        [train[token_row], *([train] * len(CATEGORICAL))],
        threshold,
    )
    ids = np.zeros((n, layout.layout().width), dtype=np.int32)  # genre OOV id 0 pads
    weights = np.zeros((n, width), dtype=np.float32)
    for r, g in enumerate(genres):
        for k, token in enumerate(g):
            ids[r, k] = maps[0].get(token, 0)
            weights[r, k] = 1.0 / len(g)
    for f, name in enumerate(CATEGORICAL, start=1):  # field f's OOV id is f
        ids[:, width + f - 1] = [maps[f].get(v, f) for v in rows.tokens[name][keep]]
    return ids, weights, layout, per_field


def preprocess(
    source: Path,
    out_dir: Path,
    settings: MovieLensParams,
    cfg: PreprocessParams,
) -> dict[str, Any]:
    """Write out_dir/{split}.mindrecord* and stats.json (atomic); return the stats dict."""
    if cfg.protocol != "clean":
        raise ValueError(
            "MovieLens needs preprocess.protocol: clean (a validation split to tune on); the "
            "zoo protocol is Criteo's"
        )
    start = time.perf_counter()
    rows = read(source)
    keep = np.ones(len(rows.ratings), dtype=bool)
    if settings.drop_neutral:
        keep &= rows.ratings != 3
    labels = (rows.ratings[keep] >= settings.label_threshold).astype(np.float32)
    n = int(keep.sum())
    split = _split(n, cfg, cfg.split_seed)
    ids, weights, layout, per_field = _encode(rows, keep, split == 0, settings.threshold)

    tmp = make_temp_dir(out_dir)
    try:
        splits = {}
        for code, name in enumerate(("train", "valid", "test")):
            sel = np.flatnonzero(split == code)
            if len(sel) == 0:
                raise ValueError(f"{source}: split {name!r} would be empty ({n} rows, {cfg})")
            splits[name] = write_split(
                tmp, name, ids[sel], weights[sel], labels[sel], cfg.rows_per_record, cfg.shards
            )
        stats = {
            "protocol": "clean",
            "settings": {**cfg.model_dump(), "movielens": settings.model_dump()},
            "source": {"path": str(source), "citation": CITATION},
            "lines_read": len(rows.ratings) + 1,
            "rows_read": len(rows.ratings),
            "bad_lines": {},
            "dropped_rows": int((~keep).sum()),  # ratings of 3, with drop_neutral
            "splits": splits,
            "eval_split": "valid",
            "final_split": "test",
            "data": layout.to_json(),
            "vocab_size": layout.layout().reserved + sum(per_field.values()),
            "vocab_per_field": per_field,
            "quirks": QUIRKS,
            "files": {name: s["files"] for name, s in splits.items()},
            "schema": RECORD_SCHEMA,
        }
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        replace_dir(tmp, out_dir, "stats.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("MovieLens preprocessed in %.2fs: %d rows", time.perf_counter() - start, n)
    return stats


def main(argv: list[str] | None = None) -> int:
    """``python -m deepfm_lib.data.movielens fetch``: put the pinned wheel in the cache."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deepfm_lib.data.movielens")
    parser.add_argument("command", choices=["fetch"])
    parser.parse_args(argv)
    print(fetch())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
