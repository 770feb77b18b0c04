"""The teacher sweep: when does DeepFM's claim hold?

DeepFM's claim is that one network learns low- and high-order interactions together, so
it beats FM (pairwise only) and DNN or Wide&Deep (no explicit pairwise term). On real data
no one can say which kind of signal the labels carry; on synthetic data the study draws
the labels, so it can make the kind of signal the experiment's variable. For each named
teacher of ``sweep.teachers`` (defined once in data.synthetic.teachers) this stage draws
its own rows, preprocesses them with the study's settings and runs the study's protocol on
them: every model tuned on the evaluation split (tune.grid; validation under the clean
protocol), every seed trained with the chosen settings, test scored once, and the main
table's statistics (paired differences over seeds, DeLong per seed) against DeepFM.

Runs live in ``work_dir/<teacher>/`` and resume after a kill like the study's own; a
teacher dropped from the list loses its folder. Opt-in (sweep.enabled): disabled, the
stage writes ``{"enabled": false}`` and nothing else.

Command line: ``python -m deepfm_lib.pipeline.sweep PARAMS_FILE WORK_DIR METRICS_JSON``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from deepfm_lib import config
from deepfm_lib.config import Params
from deepfm_lib.io import write_json
from deepfm_lib.pipeline import substudy

log = logging.getLogger(__name__)


def run_teacher(params: Params, name: str, folder: Path) -> dict[str, Any]:
    """The study on one teacher's data: draw, preprocess, tune, train, score, compare."""
    point = params.for_teacher(name)
    result = substudy.run(point, folder, params.sweep_models(), params.sweep.target)
    for figures in result["models"].values():
        figures["gap"] = result["oracle_auc"] - figures["auc"]
    return {"settings": point.data.synthetic.shape().model_dump(), **result}


def teacher_sweep(params: Params, work_dir: str | Path, metrics_path: str | Path) -> dict[str, Any]:
    """Every teacher of sweep.teachers (or nothing, when the sweep is off); write the JSON."""
    s = params.sweep
    work_dir = Path(work_dir)
    if not s.enabled:
        result: dict[str, Any] = {"enabled": False}
        write_json(metrics_path, result)
        return result
    from deepfm_lib.engine.device import use_device

    use_device(params.target(s.target).device)
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in work_dir.iterdir():
        if stale.is_dir() and stale.name not in s.teachers:
            log.info("removing %s: no longer in sweep.teachers", stale)
            shutil.rmtree(stale)
    teachers = {}
    for name in s.teachers:
        log.info("teacher %s: %s", name, params.data.synthetic.shape(name))
        teachers[name] = run_teacher(params, name, work_dir / name)
    result = {
        "enabled": True,
        "target": s.target,
        "models": params.sweep_models(),
        "seeds": params.seeds(s.target),
        "lines": params.for_teacher(s.teachers[0]).data.synthetic.rows,
        "data_seed": params.data.synthetic.seed,
        "scale": params.data.synthetic.scale,
        "protocol": params.preprocess.protocol,
        "threshold": params.preprocess.threshold,
        "dense": params.preprocess.dense,
        "tuned_on": next(iter(teachers.values()))["tuned_on"],
        "order": list(s.teachers),  # the JSON's keys are sorted; this is sweep.teachers' order
        "teachers": teachers,
    }
    write_json(metrics_path, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepfm_lib.pipeline.sweep")
    parser.add_argument("params_file", type=Path)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("metrics_path", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    teacher_sweep(config.load(args.params_file), args.work_dir, args.metrics_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
