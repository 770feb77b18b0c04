"""One compiled DeepFM training step: Adam, with the embedding tables' gradients built by hand.

Why not ``nn.TrainOneStepCell``: autodiff turns each table lookup into a dense scatter into a
zero table (``UnsortedSegmentSum`` over all 14.8M floats at the zoo config) which is then added
to the dense L2 gradient. Profiled at batch 1000 on CPU, those passes over the tables took
longer than the MLP. Here the gradient is taken with respect to the gathered rows only, and a
table's gradient is assembled as ``l2 * T + scatter_add(row gradients)``. That is the same sum
with one pass over the table fewer.

Two implementations of that embedding side (``fused``): MindSpore's ops, or on CPU the fused
C kernels of deepfm_lib.kernels, which do the lookups, field sums and squares in one pass and
the tables' gradients in one more, leaving autodiff only the MLP and the loss (DeepFM.head).

Two update rules:

- ``fast=False`` (the zoo's semantics): dense Adam over every parameter, L2 over the whole
  tables. The maths is the zoo's; only the summation order of the gradient differs.
- ``fast=True``: the MLP keeps dense Adam. The tables get lazy Adam on the rows the batch
  touched, each id once (ids seen n times have their gradients summed first; without that,
  MindSpore's sparse LazyAdam moves such a row n times and DeepFM diverges). L2 then applies
  to those rows only. This changes the optimisation: untouched rows keep their moments and
  are not decayed. The report says so.

Loss scaling is the zoo's fixed scheme: gradients of ``loss * S``, divided by S in Adam.
In a data-parallel job every rank scales its data loss by its share of the step's rows, so
the averaged gradient is that of the global mean (see deepfm_lib.distributed).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import initializer

from deepfm_lib import kernels
from deepfm_lib.cpu_runtime import hint_kernels, keep_on_actor_thread
from deepfm_lib.model import DeepFM, SumSquares, masked_mean

__all__ = ["TrainStep"]

_BETA1, _BETA2 = 0.9, 0.999  # nn.Adam's defaults, which the zoo uses


class _DataLoss(nn.Cell):
    """Mean sigmoid cross-entropy over the real rows (no L2), times this rank's share."""

    def __init__(self, network: DeepFM):
        super().__init__(auto_prefix=False)
        self.network = network
        self.bce = ops.SigmoidCrossEntropyWithLogits()

    def mean(self, logits, labels, row_mask, share):
        return masked_mean(self.bce(logits, labels), row_mask) * share


class _RowsLoss(_DataLoss):
    """The data loss from gathered table rows (MindSpore's kernels)."""

    def construct(self, rows_w, rows_v, weights, labels, row_mask, share):
        return self.mean(self.network.from_rows(rows_w, rows_v, weights), labels, row_mask, share)


class _HeadLoss(_DataLoss):
    """The data loss from the fused forward's outputs (deepfm_lib.kernels)."""

    def construct(self, h, s, linear, sq, labels, row_mask, share):
        return self.mean(self.network.head(h, s, linear, sq), labels, row_mask, share)


class _LazyRowAdam(nn.Cell):
    """Adam on the rows of one table that a batch touched, each distinct id once (``fast``).

    ``FusedSparseLazyAdam`` sums the gradients of repeated indices before its update (checked
    against a NumPy reference in the tests). The L2 gradient ``l2 * row`` must count once per
    distinct id too, so every copy of an id carries ``l2 * row / count``.
    """

    def __init__(self, table: Parameter, eps: float, l2: float):
        super().__init__(auto_prefix=False)
        self.table = table
        self.m = Parameter(initializer("zeros", table.shape, ms.float32), "moment1." + table.name)
        self.v = Parameter(initializer("zeros", table.shape, ms.float32), "moment2." + table.name)
        self.eps, self.l2 = eps, l2
        self.update = ops.FusedSparseLazyAdam()
        self.dot = ops.MatMul(transpose_b=True)

    def construct(self, flat_ids, rows, g_rows, inv_scale, counts, b1_power, b2_power, lr):
        # l2 / count per position, tiled to the rows' shape: same-shape multiplies are
        # faster than broadcasting ones on this CPU (as in DeepFM.from_rows).
        coef = ops.tile(self.l2 / counts, (1, rows.shape[1]))
        decay = rows * coef
        g = g_rows * inv_scale + decay
        out = self.update(
            self.table,
            self.m,
            self.v,
            b1_power,
            b2_power,
            lr,
            _BETA1,
            _BETA2,
            self.eps,
            g,
            flat_ids,
        )
        # 0.5 * l2 * sum over distinct ids of row^2: each copy adds 1/count of its row's,
        # i.e. 0.5 * <rows, decay>, one BLAS dot product.
        reg = 0.5 * ops.reshape(
            self.dot(ops.reshape(rows, (1, -1)), ops.reshape(decay, (1, -1))), ()
        )
        return ops.depend(reg, out)


class TrainStep(nn.Cell):
    """``step(ids, weights, labels, row_mask) -> loss`` (data loss + L2 term), updating weights.

    Parameter names match ``nn.TrainOneStepCell(loss, nn.Adam(...))``'s (``fm_w``,
    ``moment1.fm_w``, ``beta1_power``...) so checkpoints read the same way.
    """

    def __init__(
        self,
        network: DeepFM,
        lr: float,
        eps: float,
        loss_scale: float = 1.0,
        fast: bool = False,
        ranks: int = 1,
        fused: bool = False,
    ):
        super().__init__(auto_prefix=False)
        if fast and ranks > 1:
            raise ValueError(
                "train.fast (lazy sparse table updates) runs in one process only: its row "
                "updates are not all-reduced. Use fast: false with workers > 1."
            )
        self.network = network
        self.rows_loss = _RowsLoss(network)
        self.l2 = float(network.config.l2)
        self.emb_dim = network.config.emb_dim
        self.fast = fast
        self.ranks = ranks
        self.scale = float(loss_scale)
        self.sens = Tensor(self.scale, ms.float32)
        self.share_one = Tensor(1.0, ms.float32)
        tables = (network.fm_w, network.embedding_table)
        mlp = [p for p in network.trainable_params() if all(p is not t for t in tables)]
        self.mlp_params = ParameterTuple(mlp)
        self.value_and_grad = ms.value_and_grad(
            self.rows_loss, grad_position=(0, 1), weights=self.mlp_params
        )
        self.scatter_add = ops.TensorScatterAdd()
        self.hint_kernels = hint_kernels()  # see deepfm_lib.cpu_runtime
        self.fused = fused
        if fused:
            self.head_loss = _HeadLoss(network)
            self.head_value_and_grad = ms.value_and_grad(
                self.head_loss, grad_position=(0, 1, 2, 3), weights=self.mlp_params
            )
            self.embed_forward = kernels.embed_forward()
            if fast:
                self.embed_row_grads = kernels.embed_row_grads()
            else:
                self.embed_backward = kernels.embed_backward()
            self.l2_scaled = Tensor([self.l2 * self.scale], ms.float32)
        self.sum_squares = SumSquares()
        if fast:
            self.optimizer = nn.Adam(mlp, learning_rate=lr, eps=eps, loss_scale=loss_scale)
            self.lazy_w = _LazyRowAdam(network.fm_w, eps, self.l2)
            self.lazy_v = _LazyRowAdam(network.embedding_table, eps, self.l2)
            self.lazy_beta1_power = Parameter(Tensor(1.0, ms.float32), name="lazy_beta1_power")
            self.lazy_beta2_power = Parameter(Tensor(1.0, ms.float32), name="lazy_beta2_power")
            self.lr = lr
            self.unique = ops.Unique()
            params = mlp
        else:
            params = [*tables, *mlp]
            self.optimizer = nn.Adam(params, learning_rate=lr, eps=eps, loss_scale=loss_scale)
        if ranks > 1:
            # What nn.TrainOneStepCell inserts in DATA_PARALLEL mode: averaging all-reduce.
            self.grad_reducer = nn.DistributedGradReducer(params, mean=True, degree=ranks)
            self.all_reduce = ops.AllReduce()

    def _share(self, row_mask):
        """This rank's rows * ranks / all rows: the factor that makes the mean global."""
        if self.ranks == 1:
            return self.share_one
        rows = ops.sum(row_mask)
        total = ops.maximum(self.all_reduce(rows), 1.0)
        return ops.stop_gradient(rows * self.ranks / total)

    def construct(self, ids, weights, labels, row_mask):
        return keep_on_actor_thread(self._step(ids, weights, labels, row_mask), self.hint_kernels)

    def _step(self, ids, weights, labels, row_mask):
        if self.fused:
            return self._fused_step(ids, weights, labels, row_mask)
        w, v = self.network.fm_w, self.network.embedding_table
        rows_w = ops.gather(w, ids, 0)
        rows_v = ops.gather(v, ids, 0)
        share = self._share(row_mask)
        # Gradients of S * loss for the gathered rows and the MLP only (not the inputs).
        scaled, (g_in, g_mlp) = self.value_and_grad(
            rows_w, rows_v, weights, labels, row_mask, share * self.sens
        )
        data_loss = scaled / self.sens
        flat = ops.reshape(ids, (-1,))
        g_rows_w = ops.reshape(g_in[0], (-1, 1))
        g_rows_v = ops.reshape(g_in[1], (-1, self.emb_dim))
        if self.fast:
            rows_w = ops.reshape(rows_w, (-1, 1))
            rows_v = ops.reshape(rows_v, (-1, self.emb_dim))
            return data_loss + self._lazy_tables(flat, rows_w, rows_v, g_rows_w, g_rows_v, g_mlp)
        index = ops.reshape(flat, (-1, 1))
        g_w = self.scatter_add((self.l2 * self.scale) * w, index, g_rows_w)
        g_v = self.scatter_add((self.l2 * self.scale) * v, index, g_rows_v)
        grads = (g_w, g_v) + g_mlp
        if self.ranks > 1:
            grads = self.grad_reducer(grads)
        reg = 0.5 * self.l2 * (self.sum_squares(v) + self.sum_squares(w))
        return ops.depend(data_loss + reg, self.optimizer(grads))

    def _fused_step(self, ids, weights, labels, row_mask):
        """The embedding side in fused CPU kernels, so autodiff sees only the MLP and the
        loss: the forward (rows * x, their sums and squares), then for the zoo's update the
        backward into whole-table gradients plus the L2 sum, or for ``fast`` each gathered
        row's gradient."""
        w, v = self.network.fm_w, self.network.embedding_table
        h, s, linear, sq = self.embed_forward(ids, weights, v, w)
        share = self._share(row_mask)
        scaled, (g_in, g_mlp) = self.head_value_and_grad(
            h, s, linear, sq, labels, row_mask, share * self.sens
        )
        if self.fast:
            g_rows_v, g_rows_w = self.embed_row_grads(
                ids, weights, h, g_in[0], g_in[1], g_in[2], g_in[3]
            )
            flat = ops.reshape(ids, (-1,))
            rows_w = ops.gather(w, flat, 0)
            rows_v = ops.gather(v, flat, 0)
            tables = self._lazy_tables(flat, rows_w, rows_v, g_rows_w, g_rows_v, g_mlp)
            return scaled / self.sens + tables
        # The kernel runs its own threads: ordered after the MLP's gradients and before Adam,
        # it never shares the cores with MindSpore's kernels (run beside the layer-1 weight
        # gradient it made both slower than one after the other).
        dh = ops.depend(g_in[0], g_mlp)
        g_v, g_w, sumsq = self.embed_backward(
            ids, weights, h, dh, g_in[1], g_in[2], g_in[3], v, w, self.l2_scaled
        )
        grads = ops.depend((g_w, g_v) + g_mlp, g_v)
        if self.ranks > 1:
            grads = self.grad_reducer(grads)
        loss = scaled / self.sens + 0.5 * self.l2 * ops.reshape(sumsq, ())
        return ops.depend(loss, self.optimizer(grads))

    def _lazy_tables(self, flat, rows_w, rows_v, g_rows_w, g_rows_v, g_mlp):
        _, slot = self.unique(flat)  # slot: each position's distinct-id index (static shape)
        n = flat.shape[0]
        counts = ops.gather(
            ops.unsorted_segment_sum(ops.ones((n, 1), ms.float32), slot, n), slot, 0
        )
        b1 = self.lazy_beta1_power * _BETA1
        b2 = self.lazy_beta2_power * _BETA2
        b1 = ops.depend(b1, ops.assign(self.lazy_beta1_power, b1))
        b2 = ops.depend(b2, ops.assign(self.lazy_beta2_power, b2))
        inv = 1.0 / self.sens
        reg = self.lazy_w(flat, rows_w, g_rows_w, inv, counts, b1, b2, self.lr)
        reg = reg + self.lazy_v(flat, rows_v, g_rows_v, inv, counts, b1, b2, self.lr)
        return ops.depend(reg, self.optimizer(g_mlp))
