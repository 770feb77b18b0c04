"""``python -m deepfm_lib.device check``: which device targets can run here and, if not, why.

For each target (CPU, GPU, Ascend) it prints whether MindSpore can use it on this machine,
or the reasons it cannot (missing CUDA libraries by name, no NVIDIA driver, no GPU visible,
a GPU newer than the plugin's CUDA) with what to install. See docs/gpu.md.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepfm_lib.device", description=__doc__)
    parser.add_argument("command", choices=["check"], help="check: report every device target")
    parser.parse_args(argv)
    from deepfm_lib.engine.device import check_report

    print(check_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
