"""Fused CPU kernels for the embedding side of a training step (MindSpore "aot" Custom ops).

Why they exist: at the zoo's batch of 16000, MindSpore's CPU kernels spend about 600 ms of a
2.3 s step in a dozen memory-bound passes over the (batch, 39, 80) embeddings: gather, scale,
squares, sums, their gradients, AddN, and the scatter into the table gradient. Graph-kernel
fusion (MindSpore's own) is slower on this step and fails on a second compile in one process.
embedding_cpu.c does the forward in one pass and the backward plus the L2 term in two (or, for
the `lazy_adam` update, the gathered rows' gradients in one).

The C source is compiled on first use with the system's C compiler (``$CC``, else ``cc``)
into a per-user cache keyed by the source and the flags, written under a temporary name and
renamed, so concurrent ranks never load a half-written library. Without a compiler the train
step falls back to MindSpore's kernels (``kernels: auto``) or stops (``kernels: fused``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("embedding_cpu.c")
_FLAGS = ("-O3", "-pthread", "-shared", "-fPIC", "-std=gnu11", "-Wall")
KERNEL_CHOICES = ("auto", "fused", "mindspore")


class KernelUnavailable(RuntimeError):
    """The fused kernels cannot be built here; the message says why."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepfm-repro" / "kernels"


def _compiler() -> str:
    cc = os.environ.get("CC") or "cc"
    path = shutil.which(cc) or shutil.which("gcc")
    if path is None:
        raise KernelUnavailable(
            f"no C compiler found (tried $CC={os.environ.get('CC')!r}, cc, gcc); install gcc "
            "or set train.kernels: mindspore"
        )
    return path


@functools.cache
def library() -> Path:
    """Path of the compiled kernels, building them once per source version and compiler."""
    cc = _compiler()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((cc, *_FLAGS)).encode()).hexdigest()[:16]
    out = _cache_dir() / key / "libdeepfm_embedding.so"
    if out.is_file():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out.parent)
    except OSError as exc:
        raise KernelUnavailable(
            f"cannot write the kernel cache {out.parent} ({exc}); set XDG_CACHE_HOME to a "
            "writable folder"
        ) from exc
    os.close(fd)
    try:
        run = subprocess.run(
            [cc, *_FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, check=False
        )
        if run.returncode != 0:
            raise KernelUnavailable(
                f"compiling {SOURCE} with {cc} failed (exit {run.returncode}):\n"
                + run.stderr[-2000:]
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("built fused CPU kernels: %s", out)
    return out


def use_fused(choice: str, device_target: str, network=None) -> bool:
    """Whether a train step uses the fused kernels, for train.kernels = choice.

    ``auto``: on the CPU target when they build and the model can use them (both tables
    and a ``head``: DeepFM, FM, Wide&Deep); ``fused``: required (error otherwise);
    ``mindspore``: never. They are CPU code: GPU and Ascend always use MindSpore's kernels.
    """
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"train.kernels must be one of {KERNEL_CHOICES}, got {choice!r}")
    if choice == "mindspore":
        return False
    if network is not None and not network.fusable:
        if choice == "fused":
            raise KernelUnavailable(
                f"train.kernels: fused needs a model with both tables (fm_w, "
                f"embedding_table); {type(network).__name__} has "
                f"{[t.name for t in network.tables()]}: use auto or mindspore"
            )
        return False
    if device_target != "CPU":
        if choice == "fused":
            raise KernelUnavailable(
                f"train.kernels: fused runs on the CPU target only, not {device_target}; "
                "use auto or mindspore"
            )
        return False
    try:
        library()
    except KernelUnavailable as exc:
        if choice == "fused":
            raise
        log.warning("fused CPU kernels unavailable, using MindSpore's: %s", exc)
        return False
    return True


def embed_forward():
    """Custom op (ids, x, V, w) -> (h (b, F*k), s (b, k), linear (b, 1), sum h^2 (b, 1))."""
    import mindspore as ms
    from mindspore import ops

    return ops.Custom(
        f"{library()}:DeepfmEmbedForward",
        out_shape=lambda i, x, v, w: ([i[0], i[1] * v[1]], [i[0], v[1]], [i[0], 1], [i[0], 1]),
        out_dtype=(ms.float32, ms.float32, ms.float32, ms.float32),
        func_type="aot",
    )


def embed_backward():
    """Custom op (ids, x, h, dh, ds, dlinear, dsq, V, w, l2s) -> (gV, gw, sum V^2 + sum w^2):
    the whole tables' gradients (l2s * table + the rows' gradients) and the L2 sum."""
    import mindspore as ms
    from mindspore import ops

    return ops.Custom(
        f"{library()}:DeepfmEmbedBackward",
        out_shape=lambda i, x, h, dh, ds, dl, dq, v, w, l2: (list(v), list(w), [1]),
        out_dtype=(ms.float32, ms.float32, ms.float32),
        func_type="aot",
    )


def embed_row_grads():
    """Custom op (ids, x, h, dh, ds, dlinear, dsq) -> (gradient of each gathered V row
    (b*F, k), of each gathered w row (b*F, 1)): the rows' gradients for the lazy update."""
    import mindspore as ms
    from mindspore import ops

    return ops.Custom(
        f"{library()}:DeepfmEmbedRowGrads",
        out_shape=lambda i, x, h, dh, ds, dl, dq: ([i[0] * i[1], ds[1]], [i[0] * i[1], 1]),
        out_dtype=(ms.float32, ms.float32),
        func_type="aot",
    )
