"""Names a benchmark's cached data by everything that produced it.

A cached data set is reused only while its inputs (rows, generator and preprocessing
settings) and the code that wrote it (deepfm_lib/data) are unchanged; any change names a
new folder, so a benchmark never reads data an older generator or layout wrote.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

DATA_CODE = Path(__file__).resolve().parents[1] / "deepfm_lib" / "data"


def data_key(inputs: dict) -> str:
    """12 hex digits over the inputs (as sorted JSON) and the data code's sources."""
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode())
    for path in sorted(DATA_CODE.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]
