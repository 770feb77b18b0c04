"""The model zoo's command line (train.py / eval.py flags) on top of this project's stages.

Someone coming from the MindSpore model zoo types ``python train.py --dataset_path ...
--ckpt_path ... --do_eval True``; here that is ``python -m deepfm_lib.train`` with the same
flags, and ``python -m deepfm_lib.eval`` for eval.py. Training goes through
``stages.train``, the function the DVC pipeline's train stage calls, so the command line
and the pipeline cannot drift apart; everything the zoo keeps in its config file comes
from params.yaml, changed per run with ``--set key=value``.

Every failure the user can fix (a bad flag, a folder that is not preprocessed data, a
checkpoint of another network, a device this machine lacks) ends the process with one
line on stderr and a non-zero status, never a traceback: these are commands, and a
traceback buries the one sentence that says what to change. DEEPFM_TRACEBACK=1 shows
the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from deepfm_lib.config import DEVICES, Params, ParamsError, Run, parse
from deepfm_lib.io import atomic_path

__all__ = ["CliError", "train_main", "eval_main", "load_params", "check_data_dir"]

log = logging.getLogger(__name__)

TRAIN_PROG = "python -m deepfm_lib.train"
EVAL_PROG = "python -m deepfm_lib.eval"
ZOO_CKPT_PREFIX = "deepfm"  # the zoo's ckpt_file_name_prefix: deepfm-<epoch>_<step>.ckpt
_SELF_EXPLAINING = {
    "DeviceUnavailableError",
    "ResumeMismatchError",
    "NonFiniteLossError",
    "CheckpointMismatchError",
    "ParamsError",
    "CriteoFormatError",
    "DistributedError",
}
_BOOLS = {"True": True, "False": False, "true": True, "false": False}


class CliError(Exception):
    """A problem the user fixes on the command line; reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus an error; here the error alone, as one line."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise CliError(f"{message} (see --help)")


def zoo_bool(text: str) -> bool:
    """The zoo's --do_eval takes the strings True/False (its train.py compares to 'True')."""
    if text not in _BOOLS:
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return _BOOLS[text]


def _common_flags(p: argparse.ArgumentParser) -> None:
    from deepfm_lib.models import available

    p.add_argument(
        "--model",
        choices=available(),
        default="deepfm",
        help="which registered model (default deepfm, as the zoo); the zoo's defaults and "
        "flags apply to any of them",
    )
    p.add_argument(
        "--device_target",
        choices=DEVICES,
        default=None,
        help="Ascend, GPU or CPU. Default: the device of params.yaml's first target (the "
        "zoo defaults to Ascend). A target of params.yaml with this device is used, else one "
        "is added for it.",
    )
    p.add_argument(
        "--target",
        default=None,
        metavar="NAME",
        help="which entry of params.yaml 'targets:' supplies the precision and per-target "
        "overrides (default: the first one whose device is --device_target)",
    )
    p.add_argument(
        "--params",
        default="params.yaml",
        metavar="FILE",
        help="the settings file (default: params.yaml of the current folder)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting of --params; dotted keys, YAML values; repeatable, "
        "e.g. --set preset=zoo --set train.epochs=1 --set 'model.deep_layers=[16,8]'",
    )


def train_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=TRAIN_PROG,
        description="Train DeepFM with the model zoo's train.py flags (through the "
        "pipeline's train stage). Model and training settings come from --params/--set.",
    )
    p.add_argument(
        "--dataset_path",
        required=True,
        help="a folder of preprocessed data made by this project (stats.json + MindRecord "
        "shards, e.g. data/processed); its train split is trained on and its evaluation "
        "split (test, or valid under the clean protocol) scored after each epoch",
    )
    p.add_argument(
        "--ckpt_path",
        default="checkpoint",
        help="folder for checkpoints and this project's outputs (model.ckpt, "
        "deepfm-<epoch>_<step>.ckpt, loss.csv, eval.csv, train_summary.json); a rerun "
        "with the same settings resumes from it. Default: checkpoint",
    )
    p.add_argument(
        "--eval_file_name",
        default="./auc.log",
        help="AUC log in the zoo's EvalCallBack format, appended to. Default: ./auc.log",
    )
    p.add_argument(
        "--loss_file_name",
        default="./loss.log",
        help="loss log in the zoo's LossCallBack format, appended to. Default: ./loss.log",
    )
    p.add_argument(
        "--do_eval",
        type=zoo_bool,
        default=True,
        metavar="{True,False}",
        help="write the AUC log. Default: True. The pipeline's train stage scores the "
        "evaluation split after every epoch either way (eval.csv); False only skips the "
        "zoo-format AUC log",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="data-parallel worker processes: sets targets.<target>.workers (params.yaml must "
        "have that setting); scripts/run_distribute_train.sh passes it",
    )
    _common_flags(p)
    return p


def eval_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=EVAL_PROG,
        description="Score a checkpoint (the zoo's or this project's) on the test split, "
        "like the zoo's eval.py: prints and appends {'result': {'AUC': ..., 'eval_time': ...}}.",
    )
    p.add_argument(
        "--dataset_path",
        required=True,
        help="a folder of preprocessed data made by this project; its test split is scored",
    )
    p.add_argument(
        "--checkpoint_path",
        required=True,
        help="a .ckpt file: the zoo's (deepfm-5_2582.ckpt: W_l2/V_l2 names, Adam state) or "
        "this project's (model.ckpt, best.ckpt, checkpoints/step_*.ckpt)",
    )
    p.add_argument(
        "--infer_shapes",
        type=zoo_bool,
        default=False,
        metavar="{True,False}",
        help="True: build the network from the checkpoint's shapes (vocabulary, embedding, "
        "MLP widths) instead of the model settings of --params/--set. Default: False",
    )
    p.add_argument(
        "--eval_file_name",
        default="./auc.log",
        help="file the result line is appended to (the zoo's eval.py: ./auc.log). "
        "Default: ./auc.log",
    )
    p.add_argument(
        "--metrics_path",
        default=None,
        metavar="FILE",
        help="also write this project's metrics JSON (AUC, logloss, accuracy, calibration, "
        "samples/s) there",
    )
    _common_flags(p)
    return p


# ------------------------------------------------------------------ settings and data checks


def apply_set(raw: dict[str, Any], item: str) -> None:
    """Apply one KEY=VALUE (dotted key, YAML value) to the raw params mapping in place."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise CliError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=1")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise CliError(f"--set {key}: {text!r} is not a YAML value ({first})") from None
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise CliError(f"--set {key}: {where} is {child!r}, not a group of settings")
        node = child
    node[parts[-1]] = value


def _choose_target(raw: dict[str, Any], device: str | None, target: str | None) -> str:
    """The targets: entry to train/score with; adds or retargets one for --device_target."""
    targets = raw.get("targets")
    if targets is None:
        targets = raw["targets"] = {}
    if not isinstance(targets, dict):
        raise CliError(f"targets is {targets!r}, not a mapping of target names to settings")
    if target is not None:
        if target not in targets and device is None:
            known = ", ".join(targets) or "none"
            raise CliError(
                f"--target {target}: params defines no such target (has: {known}); "
                "add --device_target to create it"
            )
        entry = targets.get(target) or {}
        if device is not None:
            entry["device"] = device
        targets[target] = entry
        return target
    if device is None:
        if not targets:
            raise CliError("params define no targets: pass --device_target")
        return next(iter(targets))
    for name, entry in targets.items():
        if isinstance(entry, dict) and entry.get("device", "CPU") == device:
            return name
    entry = targets.get(device) or {}
    entry["device"] = device
    targets[device] = entry
    return device


def _anchor_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative paths in params.yaml mean the repository root (its folder), not the cwd.

    The pipeline always runs from the root; a command may run anywhere with --params.
    """
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("criteo_path"), str):
        p = Path(data["criteo_path"])
        if not p.is_absolute() and base != Path("."):
            data["criteo_path"] = str(base / p)


def load_params(
    path: str | Path,
    sets: Sequence[str],
    device: str | None,
    target: str | None,
    workers: int | None = None,
) -> tuple[Params, str]:
    """params.yaml plus --set overrides and the device choice, validated; (params, target)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise CliError(f"--params {path}: no such file (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise CliError(f"--params {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise CliError(f"--params {path}: expected a mapping of settings")
    for item in sets:
        apply_set(raw, item)
    _anchor_paths(raw, path.parent)
    name = _choose_target(raw, device, target)
    if workers is not None:  # validated (or refused) by parse below
        raw["targets"][name] = {**(raw["targets"][name] or {}), "workers": workers}
    changed = bool(sets) or device is not None or target is not None or workers is not None
    source = f"{path} with the command line's settings" if changed else str(path)
    try:
        params = parse(raw, source=source)
    except ParamsError as exc:
        raise CliError(str(exc)) from None
    return params, name


def check_data_dir(path: str | Path, splits: Sequence[str] | None = None) -> dict[str, Any]:
    """stats.json of a preprocessed folder whose shards for ``splits`` all exist.

    ``None`` means the training split and the split scored during training.
    """
    d = Path(path)
    what = "a folder made by this project's preprocessing (stats.json + MindRecord shards)"
    if not d.is_dir():
        raise CliError(f"--dataset_path {d}: no such folder; expected {what}")
    stats_path = d / "stats.json"
    if not stats_path.is_file():
        raise CliError(
            f"--dataset_path {d}: no stats.json; expected {what}, not raw Criteo text or the "
            "zoo's own MindRecord folder (run the preprocess stage: dvc repro preprocess)"
        )
    try:
        stats = json.loads(stats_path.read_text())
        wanted = list(splits) if splits is not None else ["train", stats["eval_split"]]
        vocab = int(stats["vocab_size"])
        infos = {s: stats["splits"].get(s) for s in wanted}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CliError(f"{stats_path}: not a stats.json of this project ({exc!r})") from None
    for split, info in infos.items():
        if not info or not info.get("files"):
            raise CliError(f"--dataset_path {d}: stats.json lists no {split!r} split shards")
        for name in info["files"]:
            for f in (d / name, d / f"{name}.db"):
                if not f.is_file():
                    raise CliError(f"--dataset_path {d}: {f.name} of split {split!r} is missing")
    if vocab <= 0:
        raise CliError(f"{stats_path}: vocab_size {vocab} is not positive")
    return stats


# ------------------------------------------------------------------ running and reporting


def _one_line(text: str) -> str:
    """First meaningful line of an exception (MindSpore appends C++ stacks) or a joined list."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return ""
    cut = next((i for i, ln in enumerate(lines) if ln.startswith("----")), len(lines))
    return "; ".join(lines[: max(cut, 1)][:6])


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _run(prog: str, body, argv: Sequence[str] | None, parser: argparse.ArgumentParser) -> int:
    """Parse, run, and turn every failure into one stderr line and an exit status."""
    name = prog.split()[-1]
    try:
        args = parser.parse_args(argv)
        _setup_logging()
        return body(args)
    except CliError as exc:
        print(f"{name}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a command reports, it does not dump a traceback
        if os.environ.get("DEEPFM_TRACEBACK"):
            raise
        kind = type(exc).__name__
        # The library's own errors already say what to change; others get their type named.
        prefix = "" if kind in _SELF_EXPLAINING else f"{kind}: "
        print(f"{name}: error: {prefix}{_one_line(str(exc)) or kind}", file=sys.stderr)
        return 1


def _zoo_checkpoint_name(model_dir: Path, loss_csv: Path, epochs: int) -> Path | None:
    """deepfm-<epoch>_<steps per epoch>.ckpt beside model.ckpt, as the zoo names its files."""
    import csv

    with loss_csv.open(newline="") as f:
        steps = sum(1 for r in csv.DictReader(f) if int(r["epoch"]) == epochs)
    model = model_dir / "model.ckpt"
    if not epochs or not steps or not model.is_file():
        return None
    final = model_dir / f"{ZOO_CKPT_PREFIX}-{epochs}_{steps}.ckpt"
    with atomic_path(final) as tmp:
        try:
            os.link(model, tmp)  # same bytes, no second copy on disk
        except OSError:
            import shutil

            shutil.copyfile(model, tmp)
    return final


def _refuse_msrun_worker() -> None:
    """msrun must not start this command: with --workers N the training stage starts msrun
    itself and gives every worker its share; copies started by msrun would each train on
    all the data into the same --ckpt_path."""
    role = os.environ.get("MS_ROLE")
    if role in ("MS_WORKER", "MS_SCHED"):
        raise CliError(
            f"started by msrun (MS_ROLE={role}); do not wrap this command in msrun: pass "
            "--workers N (scripts/run_distribute_train.sh does) and it starts msrun itself"
        )


def _train(args: argparse.Namespace) -> int:
    from deepfm_lib.pipeline import stages
    from deepfm_lib.zoo import logs as zoo_logs

    params, target = load_params(
        args.params, args.sets, args.device_target, args.target, args.workers
    )
    _refuse_msrun_worker()
    check_data_dir(args.dataset_path)
    model_dir = Path(args.ckpt_path)
    log.info("training target %r (%s) into %s", target, params.target(target).device, model_dir)
    from deepfm_lib.engine.device import use_device

    use_device(params.target(target).device)
    # The zoo trains one DeepFM with one seed (the first of train.seeds; --set to change).
    seed = params.seeds(target)[0]
    run = Run(params, args.model, target, seed, args.dataset_path, model_dir)
    summary = stages.train_seed(run, evaluate=args.do_eval)

    if "steps" not in summary:  # distributed, node_rank > 0: node 0 writes the outputs
        log.info("done on node %s; node 0 writes the logs and weights", summary.get("node_rank"))
        return 0
    resumed = summary.get("resumed_from_step")
    eval_file = args.eval_file_name if args.do_eval else None
    losses, evals = zoo_logs.sync(model_dir, args.loss_file_name, eval_file, resumed)
    for line in losses:  # the zoo's LossCallBack also prints each line, without the time
        print(line.split(" ", 2)[2])
    for line in evals:
        print(line)
    if not args.do_eval:
        log.info("--do_eval False: not evaluated, as the zoo's train.py (no AUC log)")
    loss_csv = model_dir / "loss.csv"
    zoo_ckpt = _zoo_checkpoint_name(model_dir, loss_csv, int(summary.get("epochs") or 0))
    final = summary.get("final_metrics") or {}
    log.info(
        "done: %s steps, final eval AUC %s; weights %s%s",
        summary.get("steps"),
        f"{final['auc']:.5f}" if final.get("auc") is not None else "n/a",
        model_dir / "model.ckpt",
        f" (also {zoo_ckpt.name})" if zoo_ckpt else "",
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    params, target = load_params(args.params, args.sets, args.device_target, args.target)
    data_dir = Path(args.dataset_path)
    stats = check_data_dir(data_dir, ["test"])
    ckpt = Path(args.checkpoint_path)
    if not ckpt.is_file():
        raise CliError(f"--checkpoint_path {ckpt}: no such file")
    t = params.target(target)

    from deepfm_lib.engine.device import DeviceUnavailableError, use_device

    try:
        use_device(t.device)
    except DeviceUnavailableError as exc:
        raise CliError(str(exc)) from None

    from deepfm_lib.data.dataset import iter_batches
    from deepfm_lib.engine.inference import score
    from deepfm_lib.io import write_json
    from deepfm_lib.zoo import logs as zoo_logs
    from deepfm_lib.zoo.checkpoint import (
        CheckpointMismatchError,
        infer_config,
        load_network,
        read_weights,
    )

    vocab = int(stats["vocab_size"])
    try:
        # The zoo's checkpoint layouts are DeepFM's; other models read our own names.
        weights = read_weights(ckpt) if args.model == "deepfm" else None
        if args.infer_shapes and args.model != "deepfm":
            raise CliError("--infer_shapes True reads the zoo's DeepFM checkpoints only")
        if args.infer_shapes:
            cfg = infer_config(weights, field_size=stats["data"]["width"], precision=t.precision)
            if cfg.vocab_size != vocab:
                raise CliError(
                    f"--checkpoint_path {ckpt}: its vocabulary has {cfg.vocab_size} ids but "
                    f"{data_dir / 'stats.json'} has {vocab}; it was trained on data "
                    "preprocessed differently (other rows, threshold or protocol)"
                )
        else:
            cfg = params.network_config(args.model, target, vocab, stats["data"]["width"])
        if args.model == "deepfm":  # the zoo's checkpoints too (its names and layouts)
            net = load_network(weights, cfg)
        else:
            from deepfm_lib.engine.inference import load_model

            net = load_model(cfg, ckpt)
    except CheckpointMismatchError as exc:
        hint = "" if args.infer_shapes else " (--infer_shapes True builds it from the checkpoint)"
        raise CliError(f"{exc}{hint}") from None

    batches = iter_batches(data_dir, "test", params.evaluate.batch_size, shuffle=False, seed=0)
    labels, probs, metrics = score(net, batches)
    eval_time = metrics["eval_time_s"]
    result = {"result": {"AUC": metrics["auc"], "eval_time": eval_time}}
    print(result)
    zoo_logs.append_lines(args.eval_file_name, [str(result)])
    if args.metrics_path:
        metrics.update(
            checkpoint=str(ckpt),
            split="test",
            target=target,
            device=t.device,
            model={
                "vocab_size": cfg.vocab_size,
                "emb_dim": cfg.emb_dim,
                "deep_layers": list(cfg.deep_layers),
            },
        )
        write_json(args.metrics_path, metrics)
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepfm_lib.train``: the zoo's train.py flags; returns the exit status."""
    return _run(TRAIN_PROG, _train, argv, train_parser())


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepfm_lib.eval``: the zoo's eval.py flags; returns the exit status."""
    return _run(EVAL_PROG, _eval, argv, eval_parser())
