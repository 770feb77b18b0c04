"""What machine a result was measured on.

CPU training is bit-reproducible on one kind of CPU, but another kind rounds differently
(other SIMD paths in MindSpore's CPU kernels and in OpenBLAS): DeepFM's test AUC on the
default study was 0.7734054 on an AMD EPYC and 0.7733279 on an Intel Xeon. So results
record the CPU they came from, and a check "to every digit" is only made on the same kind.
"""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
