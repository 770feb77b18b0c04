"""The study on real data: MovieLens-100K beside the synthetic teacher (stage `movielens`).

Every number of the main study comes from a teacher designed here, whose shape decides who
wins (docs/study.md, section 5). MovieLens-100K's labels were shaped by no one here: 943
users' ratings of 1,682 films, positive when the rating is 4 or 5 (RecBole's context-aware
protocol, data.movielens). The study runs on it as on the main data: every model of
``movielens.models`` tuned with tune.grid and early-stopped on validation, every seed
trained with the chosen settings, test scored once, DeepFM compared with each model.

Runs live in ``work_dir`` (outside DVC and git: the licence forbids redistributing the
data, and processed rows are still the data) and resume after a kill. Disabled
(movielens.enabled: false) the stage writes ``{"enabled": false}`` and nothing else.

Command line: ``python -m deepfm_lib.pipeline.movielens_study PARAMS_FILE WORK_DIR METRICS_JSON``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from deepfm_lib import config
from deepfm_lib.config import Params
from deepfm_lib.io import write_json
from deepfm_lib.pipeline import substudy

log = logging.getLogger(__name__)

# Published figures beside ours, each with its protocol and data set (RecBole's results
# pages for 1.2.x: the ml-100k quick start and the ml-1m context-aware benchmark).
RECBOLE = {
    "ml-100k quick start": {
        "data": "MovieLens-100K",
        "protocol": "label rating >= 4, ratings of 3 kept, random 0.8/0.1/0.1 split, "
        "embedding 10, RecBole's default settings",
        "auc": {"lr": 0.7765},
        "logloss": {"lr": 0.562},
    },
    "ml-1m benchmark": {
        "data": "MovieLens-1M (about 10x the ratings of ml-100k)",
        "protocol": "ratings of 3 dropped, label rating >= 4, random 0.8/0.1/0.1 split, "
        "embedding 16, a per-model grid",
        "auc": {"lr": 0.8699, "fm": 0.8935, "fnn": 0.8903, "wide_deep": 0.8987, "deepfm": 0.8997},
        "logloss": {},
    },
}


def movielens_study(
    params: Params, work_dir: str | Path, metrics_path: str | Path
) -> dict[str, Any]:
    """The study on MovieLens-100K (or nothing, when movielens.enabled is false)."""
    from deepfm_lib.data.movielens import CITATION

    s = params.movielens
    if not s.enabled:
        result: dict[str, Any] = {"enabled": False}
        write_json(metrics_path, result)
        return result
    from deepfm_lib.engine.device import use_device

    use_device(params.target(s.target).device)
    point = params.for_movielens()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    found = substudy.run(point, work_dir, params.movielens_models(), s.target)
    result = {
        "enabled": True,
        "data": "MovieLens-100K",
        "citation": CITATION,
        "target": s.target,
        "seeds": params.seeds(s.target),
        "settings": point.data.movielens.model_dump(exclude={"path"}),
        "split_seed": point.preprocess.split_seed,
        **found,
        "recbole": RECBOLE,
    }
    write_json(metrics_path, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepfm_lib.pipeline.movielens_study")
    parser.add_argument("params_file", type=Path)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("metrics_path", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    movielens_study(config.load(args.params_file), args.work_dir, args.metrics_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
