"""The device check: why a GPU (or Ascend) target cannot start, read from the real plugin.

These run on a CPU machine: the GPU plugin file is in every mindspore wheel, and what it
links can be read with ldd whether or not a GPU is present.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import tool_env

from deepfm_lib import cuda

NEEDED_FROM_PIP = {
    "libcudart.so.11.0",
    "libnvrtc.so.11.2",
    "libcublas.so.11",
    "libcurand.so.10",
    "libcufft.so.10",
    "libcusparse.so.11",
    "libcusolver.so.11",
    "libcudnn.so.8",
}

no_driver = pytest.mark.skipif(
    cuda.driver_version() is not None, reason="this machine has an NVIDIA driver"
)


def _plugin():
    plugins = cuda.gpu_plugins()
    assert [p.name for p in plugins] == ["libmindspore_gpu.so.11.6", "libmindspore_gpu.so.11.1"]
    return plugins[0]


@no_driver
def test_the_plugin_needs_the_cuda_11_runtime_and_the_driver():
    # Searched with no extra folders: what a machine without CUDA lacks, by name.
    missing = set(cuda.unresolved_libraries(_plugin(), []))
    assert missing == NEEDED_FROM_PIP | {cuda.DRIVER_LIB}
    # The extra's list is exactly what the plugin links from pip (cuBLASLt is cuBLAS's).
    assert set(cuda.RUNTIME_LIBS) - {"libcublasLt.so.11"} == NEEDED_FROM_PIP


@no_driver
def test_check_says_what_is_missing_and_what_to_install():
    proc = subprocess.run(
        [sys.executable, "-m", "deepfm_lib.device", "check"],
        capture_output=True,
        text=True,
        env=tool_env(),
        timeout=120,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert "CPU     usable" in lines
    gpu = proc.stdout.split("GPU     not usable", 1)[1].split("Ascend", 1)[0]
    assert "no NVIDIA driver: libcuda.so.1 is not found" in gpu
    still_missing = NEEDED_FROM_PIP - set(cuda.installed_runtime())
    if still_missing:  # without the [gpu] extra
        assert all(lib in gpu for lib in still_missing) and "pip install -e '.[gpu]'" in gpu
    else:  # with it: only the driver is missing
        assert "runtime libraries not found" not in gpu
    assert "Ascend  not usable" in proc.stdout and "CANN" in proc.stdout


@no_driver
def test_a_gpu_target_that_cannot_start_says_why():
    from deepfm_lib.engine.device import DeviceUnavailableError, use_device

    with pytest.raises(DeviceUnavailableError) as err:
        use_device("GPU")
    msg = str(err.value)
    assert "offers only: CPU" in msg and "Why: " in msg and "no NVIDIA driver" in msg


def test_without_a_driver_nothing_is_preloaded():
    if cuda.driver_version() is None:
        assert cuda.preload() == []
    assert set(cuda.installed_runtime()) <= set(cuda.RUNTIME_LIBS)
