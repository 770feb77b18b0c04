"""The CUDA 11 runtime MindSpore 2.10's GPU plugin needs, from pip wheels, and why it fails.

The mindspore wheel carries its GPU backend as plugins built against CUDA 11.1 and 11.6
(``lib/plugin/libmindspore_gpu.so.11.*``) but no CUDA libraries. ``pip install -e '.[gpu]'``
installs NVIDIA's CUDA 11 runtime wheels (``nvidia/<part>/lib``); nothing puts those folders
on the loader's path, and ``LD_LIBRARY_PATH`` is read once when a process starts. So
``preload()`` opens them with RTLD_GLOBAL before MindSpore is imported (the package's
``__init__`` calls it): the plugin's dependencies then resolve by soname, in every entry
point (stages, zoo commands, msrun workers) and without exporting anything by hand.

Importing this module does not import MindSpore, and costs nothing where the wheels are absent.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import subprocess
from pathlib import Path

# What the plugin links (ldd of libmindspore_gpu.so.11.6), by soname, in the order they can
# be opened (cuBLAS needs cuBLASLt; cuSOLVER needs cuBLAS and cuSPARSE). cuDNN 8 opens its
# sub-libraries itself, from its own folder.
RUNTIME_LIBS: tuple[str, ...] = (
    "libcudart.so.11.0",
    "libnvrtc.so.11.2",
    "libcublasLt.so.11",
    "libcublas.so.11",
    "libcurand.so.10",
    "libcufft.so.10",
    "libcusparse.so.11",
    "libcusolver.so.11",
    "libcudnn.so.8",
)
DRIVER_LIB = "libcuda.so.1"  # comes with the NVIDIA driver, never from pip
GPU_EXTRA_HINT = "pip install -e '.[gpu]' (or make gpu-setup): NVIDIA's CUDA 11 runtime wheels"

_loaded: list[str] = []


def wheel_lib_dirs() -> list[Path]:
    """The ``lib`` folders of the installed nvidia-*-cu11 wheels (empty without the extra)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    roots = list(spec.submodule_search_locations or []) if spec else []
    return sorted(p for root in roots for p in Path(root).glob("*/lib") if p.is_dir())


def _find(soname: str, dirs: list[Path]) -> Path | None:
    return next((d / soname for d in dirs if (d / soname).exists()), None)


def preload() -> list[str]:
    """Open the wheels' CUDA runtime globally, so MindSpore's GPU plugin can load.

    Returns the sonames opened: none without the extra or without an NVIDIA driver (then no
    GPU backend can start, and the libraries would only cost start-up time). A library that
    fails to open is skipped: the device check reports what is still missing, by name.
    """
    if _loaded:
        return list(_loaded)
    dirs = wheel_lib_dirs()
    if not dirs or driver_version() is None:  # no GPU backend can start: spare the loading
        return []
    for soname in RUNTIME_LIBS:
        path = _find(soname, dirs)
        if path is None:
            continue
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        _loaded.append(soname)
    return list(_loaded)


def installed_runtime() -> list[str]:
    """The sonames of RUNTIME_LIBS that the [gpu] extra's wheels provide here."""
    dirs = wheel_lib_dirs()
    return [soname for soname in RUNTIME_LIBS if _find(soname, dirs)]


def unresolved_libraries(plugin: Path, extra_dirs: list[Path] | None = None) -> list[str]:
    """Sonames `plugin` links that the loader cannot find (ldd), with `extra_dirs` searched
    as preload() makes them be (default: the wheels' folders)."""
    dirs = wheel_lib_dirs() if extra_dirs is None else extra_dirs
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [*(str(d) for d in dirs), *filter(None, [env.get("LD_LIBRARY_PATH")])]
    )
    out = subprocess.run(
        ["ldd", str(plugin)], capture_output=True, text=True, env=env, timeout=30, check=False
    ).stdout
    return [ln.split("=>")[0].strip() for ln in out.splitlines() if "not found" in ln]


def driver_version() -> tuple[int, int] | None:
    """The CUDA version the NVIDIA driver supports, e.g. (12, 4); None without a driver."""
    try:
        cuda = ctypes.CDLL(DRIVER_LIB)
    except OSError:
        return None
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, (version.value % 1000) // 10


def gpus() -> list[tuple[str, tuple[int, int]]]:
    """(name, compute capability) of each GPU the driver sees; empty without a driver."""
    try:
        cuda = ctypes.CDLL(DRIVER_LIB)
    except OSError:
        return []
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    found = []
    for i in range(count.value):
        dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGet(ctypes.byref(dev), i)
        cuda.cuDeviceGetName(name, 256, dev)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
        found.append((name.value.decode(errors="replace"), (major.value, minor.value)))
    return found


def plugin_dir() -> Path | None:
    """mindspore/lib/plugin, found without importing MindSpore (importing loads plugins)."""
    spec = importlib.util.find_spec("mindspore")
    roots = list(spec.submodule_search_locations or []) if spec else []
    return next((Path(r) / "lib" / "plugin" for r in roots), None)


def gpu_plugins() -> list[Path]:
    """MindSpore's GPU plugins, newest CUDA first: the order MindSpore tries them in."""
    where = plugin_dir()
    return sorted(where.glob("libmindspore_gpu.so.*"), reverse=True) if where else []


def diagnose() -> list[str]:
    """Why MindSpore's GPU backend cannot start here, each reason with what to do.

    Empty when nothing is found wrong. Reads files, runs ldd and asks the driver; it never
    imports MindSpore.
    """
    plugins = gpu_plugins()
    if not plugins:
        return ["this mindspore wheel has no GPU plugin (lib/plugin/libmindspore_gpu.so.*)"]
    problems = []
    unresolved = unresolved_libraries(plugins[0])
    runtime = [lib for lib in unresolved if lib != DRIVER_LIB]
    if runtime:
        problems.append(
            f"CUDA 11 runtime libraries not found: {', '.join(runtime)} (needed by "
            f"{plugins[0].name}); install them with {GPU_EXTRA_HINT}"
        )
    version = driver_version()
    if DRIVER_LIB in unresolved or version is None:
        problems.append(
            f"no NVIDIA driver: {DRIVER_LIB} is not found (it comes with the driver, not from "
            "pip); install an NVIDIA driver >= 520 (CUDA 11.8) on a machine with an NVIDIA GPU"
        )
        return problems
    if version < (11, 1):
        problems.append(
            f"the NVIDIA driver supports CUDA {version[0]}.{version[1]}, older than the "
            "plugin's CUDA 11; update the driver to >= 520"
        )
    devices = gpus()
    if not devices:
        problems.append(
            "the NVIDIA driver sees no GPU (in a container: run it with --gpus; check "
            "CUDA_VISIBLE_DEVICES and nvidia-smi)"
        )
    newer = [f"{n} (compute capability {a}.{b})" for n, (a, b) in devices if (a, b) > (8, 6)]
    if newer:
        problems.append(
            f"{', '.join(newer)}: newer than CUDA 11.6 (the plugin's build) knows; MindSpore's "
            "kernels then depend on the driver compiling them from PTX, which is not tested here"
        )
    if os.environ.get("CUDA_HOME"):
        problems.append(
            f"CUDA_HOME is set ({os.environ['CUDA_HOME']}): MindSpore then picks its plugin by "
            "that CUDA's nvcc version; unset it to use the wheels' CUDA 11 runtime"
        )
    return problems
