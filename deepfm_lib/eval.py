"""``python -m deepfm_lib.eval``: the model zoo's eval.py command line (see deepfm_lib.zoo.cli).

Kept thin so the command and ``python -m deepfm_lib.train`` share one implementation of
flags, settings and error reporting.
"""

from deepfm_lib.zoo.cli import eval_main

if __name__ == "__main__":
    raise SystemExit(eval_main())
