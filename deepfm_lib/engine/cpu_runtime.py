"""Keeping small CPU graphs off MindSpore's calling-thread mode, which is slow on few cores.

MindSpore 2.10 runs a graph of at most 100 kernels on the calling thread when its actor pool
has one thread, as it has on machines with fewer than about 6 cores (GraphScheduler's
single-thread execution; its log says "in multi thread or not: 0"). Every multi-threaded
kernel (MatMul) then runs on the pool's two threads while the caller spins in sched_yield
beside them: on 2 cores the products ran about 30% slower (profiled; per-thread CPU time
showed the spinning caller). A graph of more than 100 kernels runs on the actor thread while
the caller sleeps. The train step (about 90 kernels with the fused CPU kernels) and the
predictor (about 20) therefore end with a chain of scalar operations that takes them past
the bound. It costs microseconds and changes no value. Measured at the zoo's batch of 16000:
train step 2.25 -> 1.97 s, prediction 890 -> 755 ms per batch.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, ops

_SINGLE_THREAD_MAX_KERNELS = 100  # ActorDispatcher::kSingleThreadExecutionActorMaxNum


def hint_kernels() -> int:
    """Scalar operations to append to a graph: enough to pass the bound on the CPU target,
    none elsewhere (where they would only add launches)."""
    return _SINGLE_THREAD_MAX_KERNELS if ms.get_context("device_target") == "CPU" else 0


def keep_on_actor_thread(value: Tensor, kernels: int) -> Tensor:
    """value, once `kernels` scalar maxima with -1e30 have run after it (inside construct)."""
    if kernels == 0:
        return value
    pad = ops.reshape(value, (-1,))[0]
    for i in range(kernels):
        pad = ops.maximum(pad, -1e30 - i)
    return ops.depend(value, pad)
