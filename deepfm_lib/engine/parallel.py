"""Data-parallel training with MindSpore's own launcher, ``msrun``.

Two halves, one per side of the launch:

- The launcher (``launch``, ``train_with_msrun``) runs where the notebook runs. It starts
  ``msrun`` (a scheduler plus ``workers`` processes on this node), streams every worker's
  log into its own stdout with a ``[rank k]`` prefix, and waits. If a worker dies, the
  scheduler cannot listen, or msrun fails, it names the rank and the cause, kills what is
  left of the job (msrun, scheduler, and the workers, which msrun puts in sessions of their
  own) and raises, within ``cluster_timeout_s`` + ``grace_s``.
- The worker (``python -m deepfm_lib.distributed worker ...``, what msrun runs) calls
  ``mindspore.communication.init()``, selects data-parallel mode with averaged gradients and
  then runs ``stages.train_run`` with a ``Collective``: the same training loop as a single
  process, which asks the ``Collective`` for the few things that differ.

What a rank does (``Collective``):

- Data: rank k of n reads records k, k + n, ... of the training split and every step holds
  ``batch_size / n`` rows: params.yaml's batch_size is the GLOBAL batch. Ranks can own one
  record more or less, so every rank runs the same number of steps per epoch and a rank
  that runs out of rows steps with an empty (fully masked) batch instead of stopping.
- Gradients: each rank's loss is scaled by its share of the step's real rows
  (``rows_k * n / rows_total``) before the train step's all-reduce (deepfm_lib.engine.step)
  averages the gradients, so a step's update is the gradient of the mean loss over ALL its
  rows, exactly what one process with the global batch computes, even when ranks hold
  different numbers of rows. The logged loss is that global mean too.
- Learning rate: a step sees the same global batch as a single-process run of the same
  params, so the same lr applies; no linear scaling rule is needed or applied. Changing the
  number of workers changes which rows meet in a batch (sharding), not the batch size.
- Start: rank 0 alone resumes from its checkpoint (or initialises from the seed) and
  broadcasts weights, optimiser state and position; ranks never read model_dir, so only
  rank 0's machine needs it. At the end the replicas are compared bit for bit.
- Eval: each rank predicts its part of the validation split; the predictions are gathered
  and rank 0 computes ONE global AUC and logloss. Rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from deepfm_lib.config import ClusterParams
from deepfm_lib.engine.reaper import end_processes, reaped

if TYPE_CHECKING:
    from deepfm_lib.config import Run

__all__ = [
    "Collective",
    "DistributedError",
    "equal_steps",
    "launch",
    "msrun_command",
    "steps_per_epoch",
    "train_with_msrun",
]

log = logging.getLogger(__name__)

CLUSTER_TIMEOUT_S = 60  # msrun --cluster_time_out: every process must join within this
GRACE_S = 10  # after a failure, how long a lingering local worker gets before the kill
LOG_DIR = "logs"  # under model_dir: msrun's scheduler.log and worker_<rank>.log
WORKER = ("-m", "deepfm_lib.pipeline.worker", "worker")  # what msrun runs with `python`
_WORKER_EXIT = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
_SCHED_BIND = re.compile(r"Failed to (init|create) the tcp server", re.IGNORECASE)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")
_GLOG_CHATTER = re.compile(r"^\[(INFO|DEBUG)\] [A-Z_]+\(")  # MindSpore's C++ logs at exit


class DistributedError(RuntimeError):
    """A data-parallel job failed; the message names the rank and the cause."""


# -- data: the same number of steps on every rank --------------------------------------------
def steps_per_epoch(rows_per_rank: Sequence[int], local_batch: int) -> int:
    """Steps every rank runs per epoch: enough for the rank that owns the most rows."""
    if local_batch < 1:
        raise ValueError(f"local_batch must be >= 1, got {local_batch}")
    return max(-(-rows // local_batch) for rows in rows_per_rank)


def equal_steps(
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], steps: int, fields: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """This rank's batches, then empty batches up to ``steps``.

    A rank that stopped early would leave the others waiting forever in the gradient
    all-reduce; an empty batch is masked out of the loss (its rank's share is 0).
    """
    produced = 0
    for batch in batches:
        produced += 1
        if produced > steps:
            raise ValueError(f"this rank has more than the {steps} batches planned per epoch")
        yield batch
    empty = (
        np.zeros((0, fields), np.int32),
        np.zeros((0, fields), np.float32),
        np.zeros((0, 1), np.float32),
    )
    for _ in range(steps - produced):
        yield empty


# -- the worker side: collectives the training loop needs -------------------------------------
class Collective:
    """This process's rank in an initialised data-parallel job, and its collectives.

    ``deepfm_lib.engine.trainer`` calls these at the few points where data parallelism differs
    from a single process; everything else runs unchanged on every rank.
    """

    def __init__(self, rank: int, size: int):
        self.rank = rank
        self.size = size

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every file and computes every metric."""
        return self.rank == 0

    @classmethod
    def init(cls, cluster: ClusterParams) -> Collective:
        """Join the job msrun started (mccl on CPU, NCCL on GPU, HCCL on Ascend).

        The scheduler process runs this same code and never returns from ``init()``.
        """
        from mindspore import communication

        communication.init()
        rank, size = communication.get_rank(), communication.get_group_size()
        if size != cluster.world_size:
            raise DistributedError(
                f"rank {rank}: the job has {size} ranks but params ask for "
                f"{cluster.workers} workers x {cluster.nodes} nodes = {cluster.world_size}"
            )
        # The train step (deepfm_lib.engine.step) all-reduces the gradients, averaging, and scales
        # each rank's loss by its share of the step's rows so the mean is exactly global.
        ms.set_auto_parallel_context(
            parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True
        )
        log.info("rank %d of %d joined the job", rank, size)
        return cls(rank, size)

    def step_cell(self, step: nn.Cell) -> nn.Cell:
        """Wrap the train step so it returns [global mean loss, global real rows]."""
        return _GlobalStep(step, self.size)

    def broadcast_start(
        self, cell: nn.Cell, position: tuple[int, int, int] | None
    ) -> tuple[int, int, int] | None:
        """Give every rank rank 0's weights, optimiser state and resume position."""
        from mindspore.ops import communication as comm

        state = np.array([-1, -1, -1] if position is None else position, np.int32)
        shared = ms.Tensor(state)
        comm.broadcast(shared, src=0)
        for param in cell.get_parameters():
            value = ms.Tensor(param.asnumpy())
            comm.broadcast(value, src=0)
            param.set_data(value)
        got = tuple(int(v) for v in shared.asnumpy())
        return None if got[0] < 0 else (got[0], got[1], got[2])

    def gather_predictions(
        self, labels: np.ndarray, probs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Every rank's (labels, probs) concatenated in rank order, on rank 0 (else None).

        AllGather needs equal shapes: rows are padded to the largest rank's count, and the
        counts travel first so the padding is cut off again.
        """
        counts = self._all_gather(np.array([len(labels)], np.float32)).astype(np.int64)
        width = int(counts.max())
        mine = np.zeros((max(width, 1), 2), np.float32)
        mine[: len(labels), 0] = labels
        mine[: len(labels), 1] = probs
        everyone = self._all_gather(mine).reshape(self.size, max(width, 1), 2)
        if not self.is_main:
            return None
        rows = np.concatenate([everyone[k, : counts[k]] for k in range(self.size)])
        return rows[:, 0].astype(np.float64), rows[:, 1].astype(np.float64)

    def agree(self, flag: bool) -> bool:
        """Rank 0's yes or no, on every rank (e.g. whether to stop early)."""
        return bool(self._all_gather(np.array([float(flag)], np.float32))[0])

    def check_replicas(self, cell: nn.Cell) -> None:
        """Raise if any rank's weights differ from rank 0's (a broken all-reduce would)."""
        digest = hashlib.sha256()
        for param in cell.get_parameters():
            digest.update(param.name.encode())
            digest.update(np.ascontiguousarray(param.asnumpy()).tobytes())
        # 8 digest bytes as 4 exact small floats (every collective supports float32).
        mine = np.frombuffer(digest.digest()[:8], np.uint16).astype(np.float32)
        everyone = self._all_gather(mine).reshape(self.size, -1)
        differ = [k for k in range(self.size) if not np.array_equal(everyone[k], everyone[0])]
        if differ:
            raise DistributedError(
                f"rank {self.rank}: the weights of ranks {differ} differ from rank 0's after "
                "training; the replicas diverged (gradient all-reduce or broadcast failed)"
            )
        log.info("the %d replicas hold identical weights", self.size)

    def _all_gather(self, array: np.ndarray) -> np.ndarray:
        return ops.AllGather()(ms.Tensor(array)).asnumpy()


class _GlobalStep(nn.Cell):
    """One train step, then [mean of the ranks' scaled losses, all ranks' real rows]."""

    def __init__(self, step: nn.Cell, size: int):
        super().__init__(auto_prefix=False)
        self.step = step
        self.size = float(size)
        self.all_reduce = ops.AllReduce()

    def construct(self, ids, weights, labels, row_mask):
        loss = self.step(ids, weights, labels, row_mask)
        both = self.all_reduce(ops.stack([loss, ops.sum(row_mask)]))
        return ops.stack([both[0] / self.size, both[1]])


# -- the launcher side -----------------------------------------------------------------------
def _msrun_executable() -> list[str]:
    """msrun next to this interpreter (a venv's bin), else its module."""
    script = Path(sys.executable).with_name("msrun")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "mindspore.parallel.cluster.run"]


def msrun_command(
    cluster: ClusterParams,
    worker_args: Sequence[str],
    log_dir: Path,
    cluster_timeout_s: int = CLUSTER_TIMEOUT_S,
    program: Sequence[str] = WORKER,
) -> list[str]:
    """The msrun command line for this node: ``python *program *worker_args`` on each rank.

    ``--tail_worker_log`` names a rank that does not exist: the launcher streams the logs
    itself (with rank prefixes, and to the end of each file, which msrun's ``tail -f`` is
    killed before reaching).
    """
    return [
        *_msrun_executable(),
        f"--worker_num={cluster.world_size}",
        f"--local_worker_num={cluster.workers}",
        f"--master_addr={cluster.master_addr}",
        f"--master_port={cluster.master_port}",
        f"--node_rank={cluster.node_rank}",
        f"--log_dir={log_dir}",
        "--join=True",
        f"--cluster_time_out={cluster_timeout_s}",
        f"--tail_worker_log={cluster.world_size}",
        "python",  # msrun runs `python` from PATH: the launcher puts this interpreter first
        *program,
        *worker_args,
    ]


def _check_port(cluster: ClusterParams) -> None:
    """Fail in a second, not after the cluster timeout, when the scheduler's port is taken.

    Only on the node whose address is the master's (elsewhere the bind is refused with
    EADDRNOTAVAIL and there is nothing to check).
    """
    family = socket.AF_INET6 if ":" in cluster.master_addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((cluster.master_addr.strip("[]"), cluster.master_port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DistributedError(
                    f"master_port {cluster.master_port} on {cluster.master_addr} is already in "
                    "use (another job or program listens there); msrun's scheduler cannot "
                    "start. Set targets.<name>.master_port to a free port."
                ) from None
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                raise


def _job_env() -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # MindSpore's cluster code logs routine events (topology retries every 0.5 s) as
    # WARNING; at level 3 only errors remain, so the training log stays readable.
    env.setdefault("GLOG_v", "3")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _LogTail:
    """Follows one growing log file, yielding its lines as a terminal would show them.

    A progress bar redraws itself with ``\r`` and no newline; only its latest state is
    shown, at most every ``progress_every_s``, so the notebook gets a line now and then
    instead of one per step.
    """

    def __init__(self, path: Path, progress_every_s: float = 30.0):
        self.path = path
        self.offset = 0
        self.partial = ""
        self.progress_every_s = progress_every_s
        self.last_progress = time.monotonic()

    def read(self, final: bool = False) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        lines = (self.partial + chunk.decode("utf-8", errors="replace")).split("\n")
        self.partial = "" if final else lines.pop()
        shown = [line.rstrip("\r").split("\r")[-1] for line in lines]
        redraws = self.partial.split("\r")[:-1]  # complete redraws of the current line
        now = time.monotonic()
        if redraws and redraws[-1].strip() and now - self.last_progress >= self.progress_every_s:
            shown.append(redraws[-1])
            self.last_progress = now
        return [line for line in shown if line.strip()]


class _Job:
    """One running msrun: its output, its processes, the first failure and the cleanup."""

    def __init__(self, proc: subprocess.Popen, cluster: ClusterParams, log_dir: Path, out: IO[str]):
        import psutil

        self.proc = proc
        self.root = psutil.Process(proc.pid)
        self.cluster = cluster
        self.log_dir = log_dir
        self.out = out
        self.tails = {r: _LogTail(log_dir / f"worker_{r}.log") for r in cluster.local_ranks}
        self.sched_tail = _LogTail(log_dir / "scheduler.log")
        self.ranks: dict[int, int] = {}  # worker pid -> rank
        self.procs: dict[int, Any] = {}  # pid -> psutil.Process, everything the job started
        self.roles: dict[int, str] = {}  # pid -> MS_ROLE, once its environment shows one
        self.failure: str | None = None
        self.last_error: dict[int, str] = {}
        self.sched_errors: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read_msrun, daemon=True)
        self.reader.start()

    def _read_msrun(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _fail(self, cause: str) -> None:
        if self.failure is None:
            self.failure = cause
            log.error("%s", cause)

    def _rank_cause(self, pid: int, code: int) -> str:
        rank = self.ranks.get(pid)
        who = f"rank {rank} (pid {pid})" if rank is not None else f"a worker (pid {pid})"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"{who} was killed by {signal.Signals(-code).name}"
            return f"{who} was killed by signal {-code}"
        why = self.last_error.get(rank, "") if rank is not None else ""
        return f"{who} exited with status {code}" + (f": {why}" if why else "")

    def _drain_msrun(self) -> bool:
        """Show msrun's own lines; False once its output has ended."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return True
            if line is None:
                return False
            self._say(f"msrun: {line}")
            found = _WORKER_EXIT.search(line)
            if found:
                self._scan()
                self._tail(final=False)
                self._fail(self._rank_cause(int(found.group(1)), int(found.group(2))))

    def _scan(self) -> None:
        """Learn the pids of the scheduler and workers (msrun exports RANK_ID to each)."""
        import psutil

        try:
            children = self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            known = self.procs.setdefault(child.pid, child)
            if child.pid in self.roles:
                continue
            # Until msrun's child has exec'd, /proc shows msrun's own start-up environment
            # (no MS_ROLE yet): ask again on the next scan.
            with contextlib.suppress(psutil.Error):
                env = known.environ()
                if "MS_ROLE" in env:
                    self.roles[child.pid] = env["MS_ROLE"]
                    if env["MS_ROLE"] == "MS_WORKER" and "RANK_ID" in env:
                        self.ranks[child.pid] = int(env["RANK_ID"])

    def _tail(self, final: bool) -> None:
        for rank, tail in self.tails.items():
            for line in tail.read(final):
                if _EXCEPTION_LINE.match(line):
                    self.last_error[rank] = line
                if not _GLOG_CHATTER.match(line):
                    self._say(f"[rank {rank}] {line}")
        for line in self.sched_tail.read(final):
            if "ERROR" in line or "Error" in line:
                self.sched_errors.append(line)
                self._say(f"[scheduler] {line}")
                if _SCHED_BIND.search(line):
                    self._fail(
                        f"msrun's scheduler could not listen on {self.cluster.master_addr}:"
                        f"{self.cluster.master_port} (port in use?); set "
                        "targets.<name>.master_port to a free port"
                    )

    def wait(self, grace_s: float, poll_s: float = 0.25) -> int | None:
        """Stream until msrun ends, or until a failure has left no local worker alive.

        After a worker dies, msrun kills this node's other workers at once but then waits
        for its scheduler, which notices the lost rank only at its heartbeat timeout (about
        30 s); nothing is left to wait for, so the job ends as soon as the workers are gone,
        or ``grace_s`` after the failure if one of them lingers.
        """
        deadline = None
        output_open = True
        code = None
        while True:
            if output_open:
                output_open = self._drain_msrun()
            self._scan()
            self._tail(final=False)
            code = self.proc.poll()
            if code is not None and not output_open:
                break
            if self.failure is not None:
                deadline = deadline or time.monotonic() + grace_s
                workers = [self.procs[pid] for pid in self.ranks]
                if not any(_alive(p) for p in workers) or time.monotonic() > deadline:
                    self._say("launcher: the job failed; ending what is left of it")
                    break
            time.sleep(poll_s)
        self._tail(final=True)
        return code

    def kill_all(self) -> None:
        """SIGTERM, then SIGKILL, every process of the job still alive: workers first."""

        self._scan()
        if self.proc.poll() is None:
            self.procs.setdefault(self.root.pid, self.root)
        victims = [p for p in self.procs.values() if _alive(p)]
        end_processes(sorted(victims, key=lambda p: p.pid == self.root.pid))  # msrun last
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.reader.join(timeout=2)


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def launch(
    cluster: ClusterParams,
    worker_args: Sequence[str],
    log_dir: Path,
    *,
    out: IO[str] | None = None,
    cluster_timeout_s: int = CLUSTER_TIMEOUT_S,
    grace_s: float = GRACE_S,
    program: Sequence[str] = WORKER,
) -> None:
    """Run msrun for this node, stream its workers' logs to ``out``, raise on failure.

    Returns when every local worker has exited with status 0. On any failure (a worker dies
    or raises, the port is taken, the cluster does not form within ``cluster_timeout_s``)
    it raises DistributedError naming the rank and the cause, after killing every process
    the job started on this node. Ctrl-C (a notebook's interrupt) kills the job too, and so
    does this process's death by SIGKILL or SIGTERM (deepfm_lib.engine.reaper).
    """
    out = out or sys.stdout
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in [*log_dir.glob("worker_*.log"), log_dir / "scheduler.log"]:
        old.unlink(missing_ok=True)  # the tails must not replay a previous run
    if cluster.node_rank == 0:
        _check_port(cluster)
    cmd = msrun_command(cluster, worker_args, log_dir, cluster_timeout_s, program)
    log.info(
        "starting msrun: %d worker(s) here (ranks %d-%d of %d), scheduler %s:%d, logs in %s",
        cluster.workers,
        cluster.local_ranks.start,
        cluster.local_ranks.stop - 1,
        cluster.world_size,
        cluster.master_addr,
        cluster.master_port,
        log_dir,
    )
    env = _job_env()
    # The reaper ends the job if this process dies without reaching kill_all (SIGKILL).
    with reaped(env):
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,  # our Ctrl-C reaches us, and we end the job ourselves
        )
        job = _Job(proc, cluster, log_dir, out)
        code = None
        try:
            code = job.wait(grace_s)
        finally:
            job.kill_all()
    if job.failure is None and code != 0:
        detail = "; ".join(job.sched_errors[-3:]) or f"see {log_dir}"
        job.failure = f"msrun exited with status {code}: {detail}"
    if job.failure is not None:
        raise DistributedError(f"distributed training failed: {job.failure} (logs: {log_dir})")
    log.info("all %d local worker(s) finished", cluster.workers)


def train_with_msrun(run: Run, *, evaluate: bool = True) -> None:
    """One training run of a target with more than one rank: msrun runs it on every rank.

    The workers (deepfm_lib.pipeline.worker) get the already validated settings as JSON
    (next to their logs), so every rank trains with exactly what this process was given.
    """
    log_dir = run.run_dir / LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = log_dir / "params.json"
    settings.write_text(json.dumps(run.params.model_dump(mode="json"), indent=2, sort_keys=True))
    args = [
        "--params",
        str(settings.resolve()),
        "--model",
        run.model,
        "--target",
        run.target,
        "--seed",
        str(run.seed),
        "--data-dir",
        str(run.data_dir.resolve()),
        "--model-dir",
        str(run.run_dir.resolve()),
        *([] if evaluate else ["--no-eval"]),
    ]
    launch(run.cluster, args, log_dir)
