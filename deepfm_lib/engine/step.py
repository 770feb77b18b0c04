"""One compiled training step for any registered model: Adam, with the tables' gradients by hand.

The step knows models only through their contract (deepfm_lib.models.base): the tables read
by id, ``from_rows`` and, for the fused kernels, ``head``. Everything below is per table.

Why not ``nn.TrainOneStepCell``: autodiff turns each table lookup into a dense scatter into a
zero table (``UnsortedSegmentSum`` over all 14.8M floats at the zoo config) which is then added
to the dense L2 gradient. Profiled at batch 1000 on CPU, those passes over the tables took
longer than the MLP. Here the gradient is taken with respect to the gathered rows only, and a
table's gradient is assembled as ``l2 * T + scatter_add(row gradients)``. That is the same sum
with one pass over the table fewer.

Two implementations of that embedding side (``fused``): MindSpore's ops, or on CPU the fused
C kernels of deepfm_lib.engine.kernels, which do the lookups, field sums and squares in one pass and
the tables' gradients in one more, leaving autodiff only the MLP and the loss (the model's
``head``). They need both tables; a model with one (LR, DNN) runs on MindSpore's ops.

Two update rules:

- ``lazy_adam=False`` (the zoo's semantics): dense Adam over every parameter, L2 over the whole
  tables. The maths is the zoo's; only the summation order of the gradient differs.
- ``lazy_adam=True``: the MLP keeps dense Adam. The tables get lazy Adam on the rows the batch
  touched, each id once (ids seen n times have their gradients summed first; without that,
  MindSpore's sparse LazyAdam moves such a row n times and training diverges). L2 then applies
  to those rows only. This changes the optimisation: untouched rows keep their moments and
  are not decayed. The report says so.

Loss scaling is the zoo's fixed scheme: gradients of ``loss * S``, divided by S in Adam.
In a data-parallel job every rank scales its data loss by its share of the step's rows, so
the averaged gradient is that of the global mean (see deepfm_lib.engine.parallel).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import initializer

from deepfm_lib.config import lazy_adam_problem
from deepfm_lib.engine import kernels
from deepfm_lib.engine.cpu_runtime import hint_kernels, keep_on_actor_thread
from deepfm_lib.models.base import CTRModel, data_loss, l2_penalty
from deepfm_lib.models.blocks import TableSumSquares

__all__ = ["TrainStep"]

_BETA1, _BETA2 = 0.9, 0.999  # nn.Adam's defaults, which the zoo uses


class _DataLoss(nn.Cell):
    """The objective's data term (models.base.data_loss, no L2), times this rank's share."""

    def __init__(self, network: CTRModel):
        super().__init__(auto_prefix=False)
        self.network = network

    def mean(self, logits, labels, row_mask, share):
        return data_loss(logits, labels, row_mask) * share


class _RowsLoss(_DataLoss):
    """The data loss from gathered table rows (MindSpore's kernels)."""

    def construct(self, rows, weights, labels, row_mask, share):
        return self.mean(self.network.from_rows(rows, weights), labels, row_mask, share)


class _HeadLoss(_DataLoss):
    """The data loss from the fused forward's outputs (deepfm_lib.engine.kernels)."""

    def construct(self, h, s, linear, sq, labels, row_mask, share):
        return self.mean(self.network.head(h, s, linear, sq), labels, row_mask, share)


class _LazyRowAdam(nn.Cell):
    """Adam on the rows of one table that a batch touched, each distinct id once (``lazy_adam``).

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
        # faster than broadcasting ones on this CPU (as in blocks.FieldEmbedding).
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
        # lazy_adam's L2 term: models.base.l2_penalty over the distinct touched rows only.
        # Each copy of an id adds 1/count of its row's squares, so the sum is
        # 0.5 * <rows, decay>, one BLAS dot product (tests/test_step.py checks it).
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
        network: CTRModel,
        lr: float,
        eps: float,
        loss_scale: float = 1.0,
        lazy_adam: bool = False,
        ranks: int = 1,
        fused: bool = False,
    ):
        super().__init__(auto_prefix=False)
        problem = lazy_adam_problem(lazy_adam, ranks)
        if problem:
            raise ValueError(problem)
        if fused and not network.fusable:
            raise ValueError(
                f"the fused CPU kernels need a model with both tables and a head(); "
                f"{type(network).__name__} has {[t.name for t in network.tables()]}"
            )
        self.network = network
        self.rows_loss = _RowsLoss(network)
        self.l2 = float(network.config.l2)
        self.lazy_adam = lazy_adam
        self.ranks = ranks
        self.scale = float(loss_scale)
        self.sens = Tensor(self.scale, ms.float32)
        self.share_one = Tensor(1.0, ms.float32)
        tables = network.tables()
        self.tables = tables
        self.widths = tuple(int(t.shape[1]) for t in tables)
        self.n_tables = len(tables)
        mlp = [p for p in network.trainable_params() if all(p is not t for t in tables)]
        self.mlp_params = ParameterTuple(mlp)
        self.value_and_grad = ms.value_and_grad(
            self.rows_loss, grad_position=0, weights=self.mlp_params
        )
        self.scatter_add = ops.TensorScatterAdd()
        self.hint_kernels = hint_kernels()  # see deepfm_lib.engine.cpu_runtime
        self.fused = fused
        if fused:
            self.head_loss = _HeadLoss(network)
            self.head_value_and_grad = ms.value_and_grad(
                self.head_loss, grad_position=(0, 1, 2, 3), weights=self.mlp_params
            )
            self.embed_forward = kernels.embed_forward()
            if lazy_adam:
                self.embed_row_grads = kernels.embed_row_grads()
            else:
                self.embed_backward = kernels.embed_backward()
            self.l2_scaled = Tensor([self.l2 * self.scale], ms.float32)
        self.sum_squares = TableSumSquares()
        self.has_mlp = bool(mlp)  # LR and FM have only tables
        if lazy_adam:
            if mlp:
                self.optimizer = nn.Adam(mlp, learning_rate=lr, eps=eps, loss_scale=loss_scale)
            # One lazy Adam per table, as attributes named after the table (checkpoint names
            # come from the tables' names: moment1.fm_w, ...).
            self.lazy_names = tuple("lazy_" + t.name for t in tables)
            for name, table in zip(self.lazy_names, tables, strict=True):
                setattr(self, name, _LazyRowAdam(table, eps, self.l2))
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
        rows = ()
        for table in self.tables:
            rows = rows + (ops.gather(table, ids, 0),)
        share = self._share(row_mask)
        # Gradients of S * loss for the gathered rows and the MLP only (not the inputs).
        scaled, (g_in, g_mlp) = self.value_and_grad(
            rows, weights, labels, row_mask, share * self.sens
        )
        data = scaled / self.sens
        flat = ops.reshape(ids, (-1,))
        if self.lazy_adam:
            flat_rows, g_rows = (), ()
            for i in range(self.n_tables):
                flat_rows = flat_rows + (ops.reshape(rows[i], (-1, self.widths[i])),)
                g_rows = g_rows + (ops.reshape(g_in[i], (-1, self.widths[i])),)
            return data + self._lazy_tables(flat, flat_rows, g_rows, g_mlp)
        index = ops.reshape(flat, (-1, 1))
        g_tables = ()
        reg = 0.0
        for i in range(self.n_tables):
            table = self.tables[i]
            g_rows = ops.reshape(g_in[i], (-1, self.widths[i]))
            g_tables = g_tables + (self.scatter_add((self.l2 * self.scale) * table, index, g_rows),)
            reg = reg + self.sum_squares(table)
        grads = g_tables + g_mlp
        if self.ranks > 1:
            grads = self.grad_reducer(grads)
        return ops.depend(data + l2_penalty(self.l2, reg), self.optimizer(grads))

    def _fused_step(self, ids, weights, labels, row_mask):
        """The embedding side in fused CPU kernels, so autodiff sees only the MLP and the
        loss: the forward (rows * x, their sums and squares), then for the zoo's update the
        backward into whole-table gradients plus the L2 sum, or for ``lazy_adam`` each gathered
        row's gradient. Tables are (fm_w, embedding_table), as ``fusable`` requires."""
        w, v = self.tables
        h, s, linear, sq = self.embed_forward(ids, weights, v, w)
        share = self._share(row_mask)
        scaled, (g_in, g_mlp) = self.head_value_and_grad(
            h, s, linear, sq, labels, row_mask, share * self.sens
        )
        if self.lazy_adam:
            g_rows_v, g_rows_w = self.embed_row_grads(
                ids, weights, h, g_in[0], g_in[1], g_in[2], g_in[3]
            )
            flat = ops.reshape(ids, (-1,))
            rows = (ops.gather(w, flat, 0), ops.gather(v, flat, 0))
            tables = self._lazy_tables(flat, rows, (g_rows_w, g_rows_v), g_mlp)
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
        loss = scaled / self.sens + l2_penalty(self.l2, ops.reshape(sumsq, ()))
        return ops.depend(loss, self.optimizer(grads))

    def _lazy_tables(self, flat, rows, g_rows, g_mlp):
        """Lazy Adam on each table's touched rows (``lazy_adam``); returns their L2 term."""
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
        reg = 0.0
        for i in range(self.n_tables):
            lazy = getattr(self, self.lazy_names[i])
            reg = reg + lazy(flat, rows[i], g_rows[i], inv, counts, b1, b2, self.lr)
        if not self.has_mlp:
            return reg
        return ops.depend(reg, self.optimizer(g_mlp))
