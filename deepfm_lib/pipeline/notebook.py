"""Helpers for the study's notebooks: a common start-up and normalised executed copies.

Executed notebooks are DVC outputs. papermill stamps them with start/end times, durations
and a random cell id, and an object's plain-text repr carries its memory address
(`<Styler at 0x7f...>`), so two runs of the same stage would never be byte-identical and DVC
could not tell that nothing changed. `normalize` removes exactly those stamps.

Command line: `python -m deepfm_lib.pipeline.notebook normalize FILE [FILE ...]`.

It reads and writes the JSON itself, in nbformat's layout (sorted keys, indent 1, UTF-8):
importing nbformat costs 1.2-1.4 s of CPU (jsonschema builds an RFC 3987 parser at import),
paid by every notebook kernel that imported this module and by every stage's normalize.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path

from deepfm_lib.io import atomic_path

# papermill / nbclient keys that record when and how long, never what.
_NB_TIME_KEYS = ("start_time", "end_time", "duration", "environment_variables")
_CELL_VOLATILE_KEYS = ("papermill", "execution", "ExecuteTime")
# Python's default repr, `<module.Class object at 0x7f3a...>`: the address changes every run.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def _strip_addresses(text: str | list[str]) -> str | list[str]:
    if isinstance(text, list):
        return [_ADDRESS.sub(">", line) for line in text]
    return _ADDRESS.sub(">", text)


def find_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder upward holding params.yaml and dvc.yaml.

    JupyterLab starts kernels in notebooks/, papermill (with --cwd .) in the root; both
    must resolve relative paths the same way.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no params.yaml and dvc.yaml in {here} or any folder above it")


def setup(level: int = logging.INFO) -> Path:
    """Start-up for every notebook: work from the repository root and show library logs."""
    root = find_root()
    os.chdir(root)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    return root


# What each notebook reads, the notebook that writes it, and the pipeline's own copy.
_INPUTS = {
    "data_dir": ("stats.json", "01_preprocess", "data/processed"),
    "tune_path": ("", "02_tune", "reports/tune/<model>-<target>.json"),
    "model_dir": ("", "03_train", "models/<model>-<target>"),
    "metrics_dir": ("preprocess.json", "01_preprocess and 04_evaluate", "reports/metrics"),
}


def require(**inputs: str) -> None:
    """Stop with one line saying which notebook to run first when an input is missing.

    Opened by hand in JupyterLab, a notebook's defaults point at scratch/; run out of order
    it would otherwise fail deep in a traceback. Where the pipeline's own output exists,
    the message offers it.
    """
    for name, value in inputs.items():
        inner, notebook, pipeline = _INPUTS[name]
        if (Path(value) / inner).exists():
            continue
        hint = f"run notebooks/{notebook} first (it writes {value})"
        if "<" not in pipeline and Path(pipeline, inner).exists():
            hint += f", or set {name} = {pipeline!r}: the pipeline's, which exists"
        raise FileNotFoundError(f"{name} = {value!r}: {Path(value) / inner} is missing; {hint}")


def normalize(path: str | Path) -> None:
    """Strip run-specific stamps from an executed notebook, in place and atomically."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    if nb.get("nbformat") != 4:
        raise ValueError(f"{path}: expected an nbformat 4 notebook, found {nb.get('nbformat')}")
    pm = nb.get("metadata", {}).get("papermill")
    if pm is not None:
        for key in _NB_TIME_KEYS:
            pm.pop(key, None)
    for index, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{index}"
        for key in _CELL_VOLATILE_KEYS:
            cell.get("metadata", {}).pop(key, None)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "text/plain" in data:
                data["text/plain"] = _strip_addresses(data["text/plain"])
    # nbformat's own layout (nbformat.v4.nbjson.JSONWriter), plus its final newline.
    text = json.dumps(nb, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=False)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deepfm_lib.pipeline.notebook")
    sub = parser.add_subparsers(dest="command", required=True)
    norm = sub.add_parser("normalize", help="strip timestamps and random ids, in place")
    norm.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    for file in args.files:
        normalize(file)


if __name__ == "__main__":
    _main()
