"""Choosing the MindSpore device target, failing early and clearly when it cannot be used.

MindSpore loads its device plugins at import time and records which ones loaded; the
``mindspore.device_context.<target>.is_available()`` functions read that record without
touching the hardware, so asking is safe on any machine. ``mindspore.set_device`` itself does
not check: an unusable target would only fail later, at the first kernel launch, deep inside a
graph compile. Hence the check here, before any work.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import mindspore as ms

from deepfm_lib import cuda

__all__ = [
    "DeviceUnavailableError",
    "TARGETS",
    "available_targets",
    "check_report",
    "use_device",
    "why_unusable",
]

log = logging.getLogger(__name__)

TARGETS: tuple[str, ...] = ("CPU", "GPU", "Ascend")
DEFAULT_HINT = (
    "Set targets.<name>.device in params.yaml to an offered target (or remove that target), "
    "or run on a machine with a MindSpore build and drivers for it."
)


class DeviceUnavailableError(RuntimeError):
    """The requested device target cannot be used by this MindSpore build on this machine."""


@contextlib.contextmanager
def _quiet_mindspore() -> Iterator[None]:
    """is_available() logs a warning per missing plugin; the caller reports it once instead."""
    try:  # MindSpore's own logger ('ME.mindspore.log.<pid>'), not a child of 'mindspore'
        from mindspore.log import _get_logger

        ms_logger = _get_logger()
    except Exception:  # noqa: BLE001 - silencing is cosmetic
        ms_logger = logging.getLogger("mindspore")
    old = ms_logger.level
    ms_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ms_logger.setLevel(old)


def _target_module(target: str):
    return {
        "CPU": ms.device_context.cpu,
        "GPU": ms.device_context.gpu,
        "Ascend": ms.device_context.ascend,
    }[target]


def _is_usable(target: str) -> bool:
    module = _target_module(target)
    with _quiet_mindspore():
        if not module.is_available():
            return False
        if target == "CPU":
            return True
        # The plugin can load with no device present; count the devices to be sure.
        try:
            return int(module.device_count()) > 0
        except Exception:  # noqa: BLE001 - any failure means "not usable here"
            return False


def available_targets() -> list[str]:
    """Device targets this MindSpore build can run on this machine, e.g. ['CPU']."""
    return [t for t in TARGETS if _is_usable(t)]


def _plugin_error() -> str:
    try:
        from mindspore._c_expression import MSContext

        return MSContext.get_instance().load_plugin_error().strip()
    except Exception:  # noqa: BLE001 - diagnostics only
        return ""


def why_unusable(target: str) -> list[str]:
    """The reasons `target` cannot start on this machine, each saying what to install."""
    if target == "GPU":
        reasons = cuda.diagnose()
    elif target == "Ascend":
        where = cuda.plugin_dir()
        plugin = where / "libmindspore_ascend.so.2" if where else None
        missing = cuda.unresolved_libraries(plugin, []) if plugin and plugin.exists() else []
        reasons = (
            [
                f"Huawei's CANN toolkit is not found ({', '.join(missing[:4])}"
                f"{', ...' if len(missing) > 4 else ''} unresolved); install CANN and source its "
                "set_env.sh on a machine with Ascend NPUs"
            ]
            if missing
            else []
        )
    else:
        reasons = []
    said = [ln for ln in _plugin_error().splitlines() if target.lower() in ln.lower()]
    if said:
        reasons.append(f"MindSpore's plugin loading said: {said[0].strip()}")
    return reasons


def check_report() -> str:
    """What `python -m deepfm_lib.device check` prints: each target, usable or why not."""
    offered = set(available_targets())
    found, opened = cuda.installed_runtime(), cuda.preload()
    wheels = f"{len(found)} of {len(cuda.RUNTIME_LIBS)} libraries, {len(opened)} opened"
    lines = [f"MindSpore {ms.__version__}; CUDA 11 runtime from the [gpu] extra: {wheels}"]
    for target in TARGETS:
        if target in offered:
            lines.append(f"{target:7s} usable")
            notes = cuda.diagnose() if target == "GPU" else []
            lines += [f"        note: {n}" for n in notes]
            continue
        reasons = why_unusable(target) or ["MindSpore does not offer it (no reason found)"]
        lines.append(f"{target:7s} not usable")
        lines += [f"        - {r}" for r in reasons]
    return "\n".join(lines)


def use_device(target: str, *, graph_mode: bool = True, hint: str = DEFAULT_HINT) -> None:
    """Select ``target`` for this process (graph mode by default) or raise before any work.

    MindSpore allows one device target per process; asking for a different one later raises
    DeviceUnavailableError too, because the second request cannot be honoured.
    """
    if target not in TARGETS:
        raise DeviceUnavailableError(
            f"Unknown device target {target!r}: expected one of {', '.join(TARGETS)}. {hint}"
        )
    if not _is_usable(target):
        offered = available_targets()
        detail = [ln for ln in _plugin_error().splitlines() if target.lower() in ln.lower()]
        msg = (
            f"Device target {target!r} was requested, but this MindSpore {ms.__version__} "
            f"build on this machine offers only: {', '.join(offered) or 'nothing'}. {hint}"
        )
        reasons = why_unusable(target) if target != "CPU" else []
        if reasons:
            msg += " Why: " + "; ".join(reasons) + "."
        elif detail:
            msg += f" (MindSpore plugin loading said: {detail[0]})"
        raise DeviceUnavailableError(msg)
    try:
        ms.set_device(target)
    except RuntimeError as exc:
        current = ms.get_current_device()
        if current.device_target != target:
            raise DeviceUnavailableError(
                f"Device target {target!r} was requested, but this process already runs on "
                f"{current.device_target}; MindSpore cannot switch targets inside one "
                f"process. Start a new process for {target}."
            ) from exc
        # Already on this target (set_device refuses a second call once a graph ran).
    if graph_mode:
        ms.set_context(mode=ms.GRAPH_MODE)
    log.info(
        "MindSpore %s using device target %s (graph mode: %s)", ms.__version__, target, graph_mode
    )
