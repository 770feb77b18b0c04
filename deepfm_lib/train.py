"""``python -m deepfm_lib.train``: the model zoo's train.py command line (deepfm_lib.zoo.cli).

Kept thin so the command and ``python -m deepfm_lib.eval`` share one implementation of
flags, settings and error reporting.
"""

from deepfm_lib.zoo.cli import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
