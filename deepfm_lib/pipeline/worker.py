"""``python -m deepfm_lib.pipeline.worker``: what msrun runs on every rank, and a node's way in.

It sits in the pipeline layer because a rank runs the train stage itself
(``stages.train`` with a ``Collective``); the engine's launcher (deepfm_lib.engine.parallel)
only names this module, so the engine never imports the pipeline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import mindspore as ms

from deepfm_lib.engine.parallel import Collective, DistributedError

log = logging.getLogger(__name__)


def _worker(args: argparse.Namespace) -> None:
    """What msrun runs on every rank (and as the scheduler, which stays inside init())."""
    from deepfm_lib.config import Params, Run

    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    params = Params.model_validate(json.loads(Path(args.params).read_text()))
    target = params.target(args.target)  # its cluster settings: workers, nodes, ...
    from deepfm_lib.engine.device import use_device

    use_device(target.device)
    if target.device == "CPU":
        # Each rank gets its share of the cores instead of all of them.
        ms.device_context.cpu.op_tuning.threads_num(max(1, (os.cpu_count() or 1) // target.workers))
    collective = Collective.init(target)
    from deepfm_lib.pipeline import stages

    run = Run(params, args.model, args.target, args.seed, args.data_dir, args.model_dir)
    stages.train_run(run, collective=collective, evaluate=not args.no_eval)


def _launch(args: argparse.Namespace) -> None:
    """A person's way in on any node (node_rank > 0 has no pipeline of its own)."""
    from deepfm_lib import config
    from deepfm_lib.pipeline import stages

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = config.load(args.params)
    if args.node_rank is not None:
        raw = params.model_dump(mode="json")
        raw["targets"][args.target]["node_rank"] = args.node_rank
        params = config.parse(raw, source=f"{args.params} with --node-rank {args.node_rank}")
    stages.train(params, args.model, args.target, args.data_dir, args.model_dir, args.plots_dir)


def main(argv: Sequence[str] | None = None, prog: str = "python -m deepfm_lib.distributed") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("worker", "one rank of a job (msrun runs this; not for people)"),
        ("launch", "train a target with msrun on this node, as the pipeline's stage does"),
    ):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("--params", default="params.yaml")
        cmd.add_argument("--model", default="deepfm", help="a registered model name")
        cmd.add_argument("--target", required=True)
        cmd.add_argument("--data-dir", required=True)
        cmd.add_argument("--model-dir", required=True)
        if name == "worker":
            cmd.add_argument("--seed", type=int, required=True)
            cmd.add_argument("--no-eval", action="store_true", help="no per-epoch evaluation")
        if name == "launch":
            cmd.add_argument("--plots-dir", required=True)
            cmd.add_argument("--node-rank", type=int, help="override targets.<t>.node_rank")
    args = parser.parse_args(argv)
    from deepfm_lib.config import ParamsError

    try:
        (_worker if args.command == "worker" else _launch)(args)
    except (DistributedError, ParamsError) as exc:  # a sentence says it all; no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: stages.train raises
    # deepfm_lib.engine.parallel.DistributedError, which must be the same class here.
    from deepfm_lib.pipeline.worker import main as _main

    sys.exit(_main(prog="python -m deepfm_lib.pipeline.worker"))
