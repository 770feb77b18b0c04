"""The pieces every model of the study is built from: tables, field sums, FM term, MLP.

Each block keeps the MindSpore model zoo's layout and parameter names (``fm_w`` (vocab, 1),
``embedding_table`` (vocab, k), ``dense_layer_<i>.weight`` (in, out) and ``.bias``), so a
zoo checkpoint maps onto DeepFM (deepfm_lib.zoo.checkpoint) and every model's checkpoint reads
the same way. Every weight and bias is drawn from normal(0, init_std), as the zoo's
``weight_bias_init: ['normal', 'normal']``. Several ops carry a hand-written ``bprop`` or a
particular primitive because MindSpore 2.10's CPU kernels were measured slower otherwise
(benchmarks/train.py); the sums they compute are the same.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from deepfm_lib.config import ModelConfig

__all__ = [
    "FMInteraction",
    "FieldEmbedding",
    "LinearTerm",
    "MLP",
    "TableSumSquares",
    "masked_mean",
]

DTYPES = {"fp32": ms.float32, "fp16": ms.float16, "bf16": ms.bfloat16}


def normal(shape: list[int], std: float, name: str) -> Parameter:
    """A float32 Parameter drawn from normal(0, std): the zoo's initialiser for everything."""
    return Parameter(initializer(Normal(sigma=std), shape, ms.float32), name=name)


class _BiasAdd(nn.Cell):
    """y + b, whose bias gradient is ones(1, batch) @ dy.

    MindSpore 2.10's CPU BiasAddGrad took 231 ms for a (16000, 1024) gradient, and this
    product takes 11 ms (benchmarks/train.py). The sum it computes is the same.
    """

    def __init__(self):
        super().__init__()
        self.bias_add = ops.BiasAdd()
        self.matmul = ops.MatMul()

    def construct(self, y, bias):
        return self.bias_add(y, bias)

    def bprop(self, y, bias, out, dout):
        ones = ops.ones((1, dout.shape[0]), dout.dtype)
        return dout, ops.reshape(self.matmul(ones, dout), bias.shape)


class _ScaleRows(nn.Cell):
    """e = rows * x per field; the field weights x are data, so they get a zero gradient.

    Autodiff of the multiply also computed dL/dx, an e-sized product nothing used.
    """

    def __init__(self, emb_dim: int):
        super().__init__()
        self.emb_dim = emb_dim
        self.tile = ops.Tile()
        self.zeros_like = ops.ZerosLike()

    def construct(self, rows, weights):
        # Tiling x first makes it a same-shape multiply: the broadcasting one was 1.2x
        # slower forward and again in its gradient (profiled).
        return rows * self.tile(ops.expand_dims(weights, 2), (1, 1, self.emb_dim))

    def bprop(self, rows, weights, out, dout):
        xt = self.tile(ops.expand_dims(weights, 2), (1, 1, self.emb_dim))
        return dout * xt, self.zeros_like(weights)


class _RowSumSquares(nn.Cell):
    """sum(h^2) per row, whose gradient is the one product 2 h dy (autodiff made two)."""

    def __init__(self):
        super().__init__()
        self.tile = ops.Tile()

    def construct(self, h):
        return ops.sum(h * h, 1, keepdim=True)

    def bprop(self, h, out, dout):
        return (h * self.tile(2.0 * dout, (1, h.shape[1])),)


class LinearTerm(nn.Cell):
    """The first-order term sum_f w[id_f] x_f (no global bias, as in the zoo's DeepFM)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fm_w = normal([config.vocab_size, 1], config.init_std, "fm_w")
        self.bmm = ops.BatchMatMul()

    def from_rows(self, rows_w: Tensor, weights: Tensor) -> Tensor:
        # A batched product x^T rows: 10x faster on CPU than a broadcast multiply and a
        # middle-axis ReduceSum (profiled), same sum.
        return ops.reshape(self.bmm(ops.expand_dims(weights, 1), rows_w), (-1, 1))


class FieldEmbedding(nn.Cell):
    """e_f = V[id_f] x_f per field, and what the other blocks read of it.

    ``from_rows`` gives h (the e_f flattened, (b, F*k)), s = sum_f e_f (b, k) and
    sq = sum_f |e_f|^2 (b, 1): the three quantities the fused CPU kernels
    (deepfm_lib.engine.kernels) compute in one pass, so a model written on them runs on
    either implementation.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.field_size, self.emb_dim = config.field_size, config.emb_dim
        shape = [config.vocab_size, config.emb_dim]
        self.embedding_table = normal(shape, config.init_std, "embedding_table")
        self.bmm = ops.BatchMatMul()
        self.scale_rows = _ScaleRows(config.emb_dim)
        self.squared_norm = _RowSumSquares()

    def from_rows(self, rows_v: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = ops.reshape(self.bmm(ops.expand_dims(weights, 1), rows_v), (-1, self.emb_dim))
        e = self.scale_rows(rows_v, weights)  # (b, F, k)
        h = ops.reshape(e, (-1, self.field_size * self.emb_dim))
        return h, s, self.squared_norm(h)


class FMInteraction(nn.Cell):
    """sum_{i<j} <e_i, e_j> = 0.5 (|sum_f e_f|^2 - sum_f |e_f|^2): FM's O(F k) identity."""

    def construct(self, s: Tensor, sq: Tensor) -> Tensor:
        return 0.5 * (ops.sum(s * s, 1, keepdim=True) - sq)


class _DenseLayer(nn.Cell):
    """x @ W + b (W stored (in, out) like the zoo), optional ReLU, optional input dropout.

    The zoo places dropout on each dense layer's input; it keeps that position so a non-zero
    ``dropout`` means what a reader of the zoo expects.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        std: float,
        relu: bool,
        dropout: float,
        precision: str = "fp32",
    ):
        super().__init__()
        self.weight = normal([in_dim, out_dim], std, "weight")
        self.bias = normal([out_dim], std, "bias")
        # Weights stay float32 (what Adam updates); the product is computed in `precision`.
        self.half = precision != "fp32"
        self.compute_dtype = DTYPES[precision]
        self.relu = relu
        self.matmul = ops.MatMul()
        self.bias_add = _BiasAdd()
        self.use_dropout = dropout > 0.0
        self.dropout = nn.Dropout(p=dropout) if dropout > 0.0 else None

    def construct(self, x: Tensor) -> Tensor:
        if self.use_dropout:
            x = self.dropout(x)
        # MatMul + BiasAdd primitives: the broadcasting `+` was 2x slower on CPU (profiled).
        if self.half:
            dt = self.compute_dtype
            y = self.bias_add(
                self.matmul(ops.cast(x, dt), ops.cast(self.weight, dt)), ops.cast(self.bias, dt)
            )
            y = ops.cast(y, ms.float32)
        else:
            y = self.bias_add(self.matmul(x, self.weight), self.bias)
        if self.relu:
            y = ops.relu(y)
        return y


class MLP(nn.Cell):
    """ReLU layers of ``config.deep_layers`` over the flattened embeddings, then one unit.

    Layers are named attributes ``dense_layer_<i>`` (not a CellList) for the zoo's names;
    a model holding the MLP must not prefix it (``auto_prefix=False``, as CTRModel does).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        dims = [config.field_size * config.emb_dim, *config.deep_layers, 1]
        self.n_dense = len(dims) - 1
        for i in range(self.n_dense):
            layer = _DenseLayer(
                dims[i],
                dims[i + 1],
                config.init_std,
                relu=i < self.n_dense - 1,
                dropout=config.dropout,
                precision=config.precision,
            )
            setattr(self, f"dense_layer_{i + 1}", layer)

    def construct(self, h: Tensor) -> Tensor:
        for i in range(1, self.n_dense + 1):
            h = getattr(self, "dense_layer_" + str(i))(h)
        return h


def masked_mean(values: Tensor, row_mask: Tensor) -> Tensor:
    """Mean over the rows whose mask is 1: a padded batch's mean equals the unpadded one."""
    return ops.sum(values * row_mask) / ops.maximum(ops.sum(row_mask), 1.0)


class TableSumSquares(nn.Cell):
    """sum(t^2) of a whole table, as one (1, n) x (n, 1) product.

    MindSpore 2.10's CPU L2Loss sums 14.8M floats in float32 one after another and was 2.8%
    low at the zoo's table size; ReduceSum is exact but took 64 ms. This BLAS dot product is
    exact to about 1e-6 and took 29 ms (a test checks it against NumPy in float64).
    """

    def __init__(self):
        super().__init__()
        self.dot = ops.MatMul(transpose_b=True)

    def construct(self, t):
        flat = ops.reshape(t, (1, -1))
        return ops.reshape(self.dot(flat, flat), ())
