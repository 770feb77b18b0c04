"""DeepFM as the MindSpore model zoo trains it, as a reproducible study (see README.md).

Before anything imports MindSpore (whose import loads its device plugins), the CUDA 11
runtime of the optional ``[gpu]`` extra is opened, so the GPU plugin finds it; without the
extra this does nothing.
"""

from deepfm_lib import cuda

cuda.preload()
