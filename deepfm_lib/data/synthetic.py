"""Criteo-format synthetic data with a known teacher model.

Why: the study must run end to end on a laptop without the 11 GB Kaggle file, and a
synthetic source whose labels come from a known model gives an upper bound (the teacher's
own AUC) to judge a trained DeepFM against. The text is byte-for-byte the raw Criteo format
(label, I1..I13, C1..C26, tab-separated, empty = missing), so everything downstream is
exercised exactly as with the real data.

Generation runs in fixed-size blocks, each drawn from its own seeded stream, so a file of
N rows is a prefix of a file of M > N rows for the same seed and settings.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from deepfm_lib.config import TeacherParams
from deepfm_lib.data.criteo import N_CAT, N_DENSE
from deepfm_lib.data.oracle import LOGITS_FILE, PART_NAMES, PARTS_FILE
from deepfm_lib.io import make_temp_dir, replace_dir

log = logging.getLogger(__name__)

# Distinct values per categorical field in the Criteo Kaggle training data (C1..C26).
KAGGLE_CARDINALITY: tuple[int, ...] = (
    1460,
    583,
    10131227,
    2202608,
    305,
    24,
    12517,
    633,
    3,
    93145,
    5683,
    8351593,
    3194,
    27,
    14992,
    5461306,
    10,
    5652,
    2173,
    4,
    7046547,
    18,
    15,
    286181,
    105,
    142572,
)
# Missing rates of the Kaggle data (fractions), I1..I13 then C1..C26.
DENSE_MISSING: tuple[float, ...] = (
    0.454,
    0.0,
    0.215,
    0.221,
    0.026,
    0.223,
    0.043,
    0.0005,
    0.043,
    0.454,
    0.043,
    0.78,
    0.221,
)
CAT_MISSING: tuple[float, ...] = (
    0.0,
    0.0,
    0.034,
    0.034,
    0.0,
    0.121,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.034,
    0.0,
    0.0,
    0.0,
    0.034,
    0.0,
    0.0,
    0.44,
    0.44,
    0.034,
    0.79,
    0.0,
    0.034,
    0.44,
    0.44,
)
# Fields that go missing together in the real data share one uniform draw per row, so
# their missingness is correlated as in Criteo (e.g. C19, C20, C25, C26).
_MISSING_GROUPS: dict[str, tuple[str, ...]] = {
    "a": ("I1", "I10"),
    "b": ("I4", "I13"),
    "c": ("I7", "I9", "I11"),
    "d": ("C3", "C4", "C12", "C16", "C21", "C24"),
    "e": ("C19", "C20", "C25", "C26"),
}
# Dense fields: log(x + 1) ~ Normal(mu, sigma), clipped to [0, max] like the Kaggle ranges.
_DENSE_SHAPE: tuple[tuple[float, float, int], ...] = (
    (0.7, 1.2, 5775),
    (1.4, 1.8, 257675),
    (2.1, 1.4, 65535),
    (1.9, 0.9, 969),
    (7.9, 2.0, 23159456),
    (3.5, 1.6, 431037),
    (1.4, 1.3, 56311),
    (2.2, 0.9, 6047),
    (3.8, 1.3, 29019),
    (0.3, 0.5, 11),
    (0.8, 0.8, 231),
    (0.1, 0.9, 4008),
    (1.8, 1.0, 7393),
)
_I2_NEGATIVE_RATE = 0.04  # I2 is the one dense field with values -1..-3 in Criteo

_BLOCK_ROWS = 100_000
_TABLE_CAP = 1 << 18  # teacher factor tables: tail values of huge fields share rows
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

# The teacher's logit, term by term, for each row: where a model's gap to the ceiling goes.
# The spread of the teacher's drawn weights: first-order weights, FM factors, and the MLP's
# output weights (times 1/sqrt(hidden)). A TeacherParams weight multiplies a whole term.
_LINEAR_STD, _FACTOR_STD, _MLP_STD = 0.25, 0.15, 1.0


def _mix32(x: np.ndarray) -> np.ndarray:
    """A bijection on uint32 (murmur3 finaliser): distinct inputs give distinct hashes."""
    x = x.astype(np.uint64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    x ^= x >> 16
    return x.astype(np.uint32)


def _hex8(values: np.ndarray) -> np.ndarray:
    """uint32 -> 8 lowercase hex digits as numpy S8, without a Python loop."""
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    nibbles = (values[:, None] >> shifts) & 0xF
    return np.ascontiguousarray(_HEX[nibbles]).view("S8").ravel()


def scaled_cardinalities(scale: float, min_cardinality: int = 32) -> list[int]:
    """Kaggle cardinalities times `scale`, but never below min(real, min_cardinality).

    Why the floor: small fields (C9 has 3 values, C20 4) would otherwise collapse to a
    single value at laptop scales and stop carrying any signal.
    """
    return [min(card, max(min_cardinality, round(card * scale))) for card in KAGGLE_CARDINALITY]


class _Teacher:
    """Labels' ground truth: first-order + FM over hidden factors + a small tanh MLP, each
    term weighted by the TeacherParams (the same draws for every shape of one seed)."""

    def __init__(
        self, cards: list[int], seed: int, dim: int, shape: TeacherParams, mlp_hidden: int
    ) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
        self.cards = cards
        self.shape = shape
        # Table rows: every value (index m = "missing") when small, hashed buckets when huge.
        self.sizes = [min(m + 1, _TABLE_CAP) for m in cards]
        self.w = [rng.normal(0, _LINEAR_STD, s).astype(np.float32) for s in self.sizes]
        self.v = [rng.normal(0, _FACTOR_STD, (s, dim)).astype(np.float32) for s in self.sizes]
        self.wd = rng.normal(0, _LINEAR_STD, N_DENSE).astype(np.float32)
        self.vd = rng.normal(0, _FACTOR_STD, (N_DENSE, dim)).astype(np.float32)
        n_in = N_CAT * dim + N_DENSE
        self.w1 = rng.normal(0, 1 / np.sqrt(n_in / 4), (n_in, mlp_hidden)).astype(np.float32)
        self.w2 = rng.normal(0, _MLP_STD / np.sqrt(mlp_hidden), mlp_hidden).astype(np.float32)
        self.bias = 0.0

    def _rows(self, f: int, idx: np.ndarray) -> np.ndarray:
        if self.cards[f] + 1 <= _TABLE_CAP:
            return idx
        return (_mix32(idx.astype(np.uint32) ^ np.uint32(0x9E3779B9)) % _TABLE_CAP).astype(np.int64)

    def parts(self, cat_idx: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The logit's terms before the bias, (n, 3) float32: linear, FM, MLP.

        cat_idx (n, 26) value indices with m_f meaning missing; z (n, 13) dense inputs.
        Each term is computed in float32 exactly as before it was split out, so
        logits_from_parts(parts(...)) is bit for bit what logits(...) always returned.
        """
        n = cat_idx.shape[0]
        lin = z @ self.wd
        vdense = z[:, :, None] * self.vd[None]  # (n, 13, dim)
        vsum = vdense.sum(axis=1)
        vsq = np.square(vdense).sum(axis=(1, 2))
        factors = []
        for f in range(N_CAT):
            rows = self._rows(f, cat_idx[:, f])
            lin = lin + self.w[f][rows]
            vf = self.v[f][rows]
            vsum += vf
            vsq += np.square(vf).sum(axis=1)
            factors.append(vf)
        fm = 0.5 * (np.square(vsum).sum(axis=1) - vsq)
        pre = np.concatenate(factors + [z], axis=1) @ self.w1
        if self.shape.mlp_gain != 1.0:  # skipped at 1: the original teacher, bit for bit
            pre *= np.float32(self.shape.mlp_gain)
        mlp = np.tanh(pre) @ self.w2
        out = np.stack([lin, fm, mlp], axis=1)
        weights = (self.shape.linear, self.shape.pairwise, self.shape.higher_order)
        for k, weight in enumerate(weights):
            if weight != 1.0:
                out[:, k] *= np.float32(weight)
        assert out.shape == (n, 3) and out.dtype == np.float32
        return out

    def dense_inputs(self, dense: np.ndarray, dense_missing: np.ndarray) -> np.ndarray:
        """What the teacher sees of the dense values (TeacherParams.dense); missing is 0."""
        if self.shape.dense == "log1p":
            z = np.log1p(np.maximum(dense, 0)).astype(np.float32)
            z /= np.array([mu + 2 for mu, _, _ in _DENSE_SHAPE], dtype=np.float32)
        else:  # linear in the raw value, negatives included: x / max as the zoo feeds it
            z = (dense / np.array([vmax for _, _, vmax in _DENSE_SHAPE])).astype(np.float32)
        z[dense_missing] = 0.0
        return z

    def logits_from_parts(self, parts: np.ndarray) -> np.ndarray:
        """((linear + fm) + mlp) + bias, summed in float32 in that order (as always)."""
        out = parts[:, 0] + parts[:, 1] + parts[:, 2] + self.bias
        return out.astype(np.float32)

    def logits(self, cat_idx: np.ndarray, z: np.ndarray) -> np.ndarray:
        """cat_idx (n, 26) value indices with m_f meaning missing; z (n, 13) dense inputs."""
        return self.logits_from_parts(self.parts(cat_idx, z))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _calibrate_bias(logits: np.ndarray, target: float) -> float:
    """Bisection for b with mean(sigmoid(logit + b)) == target."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(logits + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class _Sampler:
    """Draws feature values for one block of rows from its own seeded stream."""

    def __init__(self, cards: list[int], zipf_a: float) -> None:
        self.cards = cards
        self.zipf_a = zipf_a
        names = [f"I{i + 1}" for i in range(N_DENSE)] + [f"C{i + 1}" for i in range(N_CAT)]
        self.group_of = {name: None for name in names}
        for group, members in _MISSING_GROUPS.items():
            for name in members:
                self.group_of[name] = group

    def _missing(
        self, rng: np.random.Generator, n: int, uniforms: dict, name: str, rate: float
    ) -> np.ndarray:
        group = self.group_of[name]
        if group is None:
            return rng.random(n) < rate
        if group not in uniforms:
            uniforms[group] = rng.random(n)
        return uniforms[group] < rate

    def draw(self, rng: np.random.Generator, n: int):
        uniforms: dict[str, np.ndarray] = {}
        dense = np.empty((n, N_DENSE), dtype=np.int64)
        dense_missing = np.empty((n, N_DENSE), dtype=bool)
        for i, (mu, sigma, vmax) in enumerate(_DENSE_SHAPE):
            x = np.floor(np.exp(rng.normal(mu, sigma, n))) - 1
            dense[:, i] = np.clip(x, 0, vmax).astype(np.int64)
            dense_missing[:, i] = self._missing(rng, n, uniforms, f"I{i + 1}", DENSE_MISSING[i])
        neg = rng.random(n) < _I2_NEGATIVE_RATE
        dense[neg, 1] = -rng.choice(np.array([1, 1, 1, 1, 2, 3]), size=int(neg.sum()))
        cat_idx = np.empty((n, N_CAT), dtype=np.int64)
        cat_missing = np.empty((n, N_CAT), dtype=bool)
        for f, m in enumerate(self.cards):
            # Continuous inverse CDF of a power law on [1, m + 1): Zipf-like, no table.
            u = rng.random(n)
            a1 = 1.0 - self.zipf_a
            x = np.power(1.0 + u * (np.power(m + 1.0, a1) - 1.0), 1.0 / a1)
            cat_idx[:, f] = np.minimum(np.floor(x).astype(np.int64) - 1, m - 1)
            cat_missing[:, f] = self._missing(rng, n, uniforms, f"C{f + 1}", CAT_MISSING[f])
        return dense, dense_missing, cat_idx, cat_missing


def _block_table(
    label: np.ndarray,
    dense: np.ndarray,
    dense_missing: np.ndarray,
    cat_idx: np.ndarray,
    cat_missing: np.ndarray,
    salts: np.ndarray,
) -> pa.Table:
    cols: dict[str, pa.Array] = {"label": pa.array(label.astype(np.int8))}
    for i in range(N_DENSE):
        cols[f"I{i + 1}"] = pa.array(dense[:, i], mask=dense_missing[:, i])
    for f in range(N_CAT):
        hashes = _mix32(cat_idx[:, f].astype(np.uint32) + salts[f])
        arr = pa.array(_hex8(hashes), type=pa.binary(8), mask=cat_missing[:, f])
        cols[f"C{f + 1}"] = arr.cast(pa.string())
    return pa.table(cols)


def generate(
    out_dir: Path,
    rows: int,
    seed: int,
    scale: float = 0.01,
    *,
    positive_rate: float = 0.256,
    zipf_a: float = 1.1,
    min_cardinality: int = 32,
    dim: int = 8,
    teacher: TeacherParams | None = None,
    mlp_hidden: int = 16,
    block_rows: int = _BLOCK_ROWS,
    progress: bool = True,
) -> dict:
    """Write out_dir/{train.txt, teacher_logits.npy, teacher_parts.npy, generator.json};
    return the json dict.

    teacher_parts.npy is float32 (rows, 3): the linear, FM and MLP terms of each row's
    logit, with ((linear + fm) + mlp) + teacher_bias in float32 == teacher_logits bit for bit.

    `scale` multiplies the Kaggle per-field cardinalities (0.01: C3 has ~101k values).
    `teacher` weighs the logit's terms (default: all 1, the study's original teacher).
    Atomic: built in a temporary folder beside out_dir, then renamed into place.
    """
    out_dir = Path(out_dir)
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    if not 0.0 < positive_rate < 1.0:
        raise ValueError(f"positive_rate must be in (0, 1), got {positive_rate}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    cards = scaled_cardinalities(scale, min_cardinality)
    shape = TeacherParams() if teacher is None else teacher
    teacher = _Teacher(cards, seed, dim, shape, mlp_hidden)
    sampler = _Sampler(cards, zipf_a)
    salts = _mix32(np.arange(N_CAT, dtype=np.uint32) + np.uint32(seed & 0xFFFFFFFF))

    # Calibrate the bias on a separate stream so the teacher does not depend on `rows`.
    cal_rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    d, dm, c, cm = sampler.draw(cal_rng, 50_000)
    c = np.where(cm, np.array(cards)[None, :], c)
    teacher.bias = _calibrate_bias(teacher.logits(c, teacher.dense_inputs(d, dm)), positive_rate)

    tmp = make_temp_dir(out_dir)
    try:
        logits = np.empty(rows, dtype=np.float32)
        labels = np.empty(rows, dtype=np.int8)
        # Written in place through a mapping: 12 bytes a row need not sit in memory.
        parts = np.lib.format.open_memmap(
            tmp / PARTS_FILE, mode="w+", dtype=np.float32, shape=(rows, len(PART_NAMES))
        )
        write_opts = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
        n_blocks = -(-rows // block_rows)
        with open(tmp / "train.txt", "wb") as fh:
            for b in tqdm(range(n_blocks), desc="generate", unit="block", disable=not progress):
                start, stop = b * block_rows, min(rows, (b + 1) * block_rows)
                rng = np.random.default_rng(np.random.SeedSequence([seed, 1, b]))
                # Draw a whole block even when truncated, so files are prefixes of each other.
                d, dm, c, cm = sampler.draw(rng, block_rows)
                lab_u = rng.random(block_rows)
                n = stop - start
                # The teacher too sees the whole block: BLAS rounds a row's dot products by
                # where it sits in the matrix, so a truncated block would move the last rows'
                # logits by an ulp and the files would stop being prefixes of each other.
                cidx = np.where(cm, np.array(cards)[None, :], c)
                pt = teacher.parts(cidx, teacher.dense_inputs(d, dm))
                pt = pt[:n]
                d, dm, c, cm, lab_u = d[:n], dm[:n], c[:n], cm[:n], lab_u[:n]
                lg = teacher.logits_from_parts(pt)
                lab = (lab_u < _sigmoid(lg)).astype(np.int8)
                logits[start:stop], labels[start:stop], parts[start:stop] = lg, lab, pt
                pacsv.write_csv(_block_table(lab, d, dm, c, cm, salts), fh, write_opts)
        parts.flush()
        del parts  # close the mapping before the folder is renamed
        np.save(tmp / LOGITS_FILE, logits)
        from sklearn.metrics import roc_auc_score  # slow import, needed only here

        both = labels.min() != labels.max()
        info = {
            "format": "criteo-raw-tsv",
            "rows": rows,
            "seed": seed,
            "settings": {
                "scale": scale,
                "positive_rate_target": positive_rate,
                "zipf_a": zipf_a,
                "min_cardinality": min_cardinality,
                "dim": dim,
                "mlp_hidden": mlp_hidden,
                "block_rows": block_rows,
            },
            "cardinality": {f"C{f + 1}": m for f, m in enumerate(cards)},
            "missing_rate_target": {
                **{f"I{i + 1}": r for i, r in enumerate(DENSE_MISSING)},
                **{f"C{f + 1}": r for f, r in enumerate(CAT_MISSING)},
            },
            # The term weights and the dense transform (config.TeacherParams).
            "teacher": shape.model_dump(),
            "teacher_bias": teacher.bias,
            "teacher_parts": {
                "file": PARTS_FILE,
                "dtype": "float32",
                "shape": [rows, len(PART_NAMES)],
                "columns": list(PART_NAMES),
                "meaning": {
                    "linear": "first-order terms: dense weights times inputs plus one "
                    "weight per categorical value (times teacher.linear)",
                    "fm": "pairwise factorization-machine interactions over all 39 fields "
                    "(times teacher.pairwise)",
                    "mlp": "the tanh MLP over the categorical factors and dense inputs "
                    "(times teacher.higher_order)",
                },
                "sum": "teacher_logits == ((linear + fm) + mlp) + teacher_bias, summed in "
                "float32 in that order, the bias rounded to float32 (bit for bit)",
            },
            "positives": int(labels.sum()),
            "positive_rate": float(labels.mean()),
            "teacher_auc_all_rows": float(roc_auc_score(labels, logits)) if both else None,
            "files": ["train.txt", LOGITS_FILE, PARTS_FILE, "generator.json"],
        }
        (tmp / "generator.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        replace_dir(tmp, out_dir, "generator.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "generated %d rows in %s (positive rate %.4f, teacher AUC %s)",
        rows,
        out_dir,
        info["positive_rate"],
        info["teacher_auc_all_rows"],
    )
    return info
