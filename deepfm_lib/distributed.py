"""``python -m deepfm_lib.distributed launch ...``: train a target with msrun on this node.

The command line's home is deepfm_lib.pipeline.worker; this name is kept for the docs'
multi-node command.
"""

import sys

from deepfm_lib.pipeline.worker import main

if __name__ == "__main__":
    sys.exit(main())
