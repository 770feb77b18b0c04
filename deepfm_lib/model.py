"""DeepFM as a MindSpore Cell, laid out like the MindSpore model zoo's so its checkpoints map.

The zoo's network (model_zoo/official/recommend/deepfm/src/deepfm.py, latest revision) is:
linear term sum_f w[id_f] x_f (no global bias), FM term on e_f = V[id_f] x_f, and an MLP on the
flattened e_f; logit = linear + FM + MLP. Every weight and bias is drawn from normal(0, 0.01)
(its ``weight_bias_init: ['normal', 'normal']``). Layouts follow the zoo: ``fm_w`` (vocab, 1)
and ``embedding_table`` (vocab, emb) -- saved by the zoo under the Parameter names ``W_l2`` and
``V_l2`` -- and ``dense_layer_<i>.weight`` (in, out) and ``dense_layer_<i>.bias`` (out,) under
the zoo's own names; deepfm_lib.zoo_checkpoint maps a zoo checkpoint onto this network. The
zoo's MLP runs in float16 on Ascend; here ModelConfig.precision chooses (float32 by default:
MindSpore's CPU kernels are slower in half precision).
"""

from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

__all__ = [
    "ModelConfig",
    "DeepFM",
    "DeepFMWithLoss",
    "SumSquares",
    "count_parameters",
    "masked_mean",
]


@dataclass(frozen=True)
class ModelConfig:
    """Shape and regularisation of the network; the defaults are the zoo's except vocab_size."""

    vocab_size: int
    field_size: int = 39
    emb_dim: int = 80
    deep_layers: tuple[int, ...] = (1024, 512, 256, 128)
    dropout: float = 0.0
    init_std: float = 0.01
    l2: float = 8e-5
    # Precision of the MLP's matrix multiplies (embeddings and losses stay float32, as in the
    # zoo, whose MLP runs in float16 on Ascend). MindSpore 2.10 has no bf16 MatMul on CPU.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        # YAML gives lists; a tuple keeps the config hashable and comparable.
        object.__setattr__(self, "deep_layers", tuple(int(d) for d in self.deep_layers))
        for name in ("vocab_size", "field_size", "emb_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if not self.deep_layers or any(d <= 0 for d in self.deep_layers):
            raise ValueError(
                f"ModelConfig.deep_layers must be a non-empty list of positive widths, "
                f"got {self.deep_layers!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.init_std <= 0:
            raise ValueError(f"ModelConfig.init_std must be positive, got {self.init_std!r}")
        if self.l2 < 0:
            raise ValueError(f"ModelConfig.l2 must be >= 0, got {self.l2!r}")
        if self.precision not in _DTYPES:
            raise ValueError(
                f"ModelConfig.precision must be one of {sorted(_DTYPES)}, got {self.precision!r}"
            )


_DTYPES = {"fp32": ms.float32, "fp16": ms.float16, "bf16": ms.bfloat16}


def _normal(shape: list[int], std: float, name: str) -> Parameter:
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


class _SquaredNorm(nn.Cell):
    """sum(h^2) per row, whose gradient is the one product 2 h dy (autodiff made two)."""

    def __init__(self):
        super().__init__()
        self.tile = ops.Tile()

    def construct(self, h):
        return ops.sum(h * h, 1, keepdim=True)

    def bprop(self, h, out, dout):
        return (h * self.tile(2.0 * dout, (1, h.shape[1])),)


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
        self.weight = _normal([in_dim, out_dim], std, "weight")
        self.bias = _normal([out_dim], std, "bias")
        # Weights stay float32 (what Adam updates); the product is computed in `precision`.
        self.half = precision != "fp32"
        self.compute_dtype = _DTYPES[precision]
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


class DeepFM(nn.Cell):
    """DeepFM logits from (ids, weights); no batch size is baked in, any b works."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.field_size = config.field_size
        self.emb_dim = config.emb_dim
        std = config.init_std
        self.fm_w = _normal([config.vocab_size, 1], std, "fm_w")
        self.embedding_table = _normal([config.vocab_size, config.emb_dim], std, "embedding_table")
        self.bmm = ops.BatchMatMul()
        self.scale_rows = _ScaleRows(config.emb_dim)
        self.squared_norm = _SquaredNorm()
        dims = [config.field_size * config.emb_dim, *config.deep_layers, 1]
        self.n_dense = len(dims) - 1
        for i in range(self.n_dense):
            last = i == self.n_dense - 1
            layer = _DenseLayer(
                dims[i],
                dims[i + 1],
                std,
                relu=not last,
                dropout=config.dropout,
                precision=config.precision,
            )
            # Named attributes (not a CellList) give the zoo's parameter names.
            setattr(self, f"dense_layer_{i + 1}", layer)

    def construct(self, ids: Tensor, weights: Tensor) -> Tensor:
        rows_w = ops.gather(self.fm_w, ids, 0)  # (b, F, 1)
        rows_v = ops.gather(self.embedding_table, ids, 0)  # (b, F, k)
        return self.from_rows(rows_w, rows_v, weights)

    def from_rows(self, rows_w: Tensor, rows_v: Tensor, weights: Tensor) -> Tensor:
        """Logits from the table rows already gathered for each field.

        Split out so the train step can differentiate with respect to the (b, F, k) rows
        and build the tables' gradients itself (deepfm_lib.step) instead of autodiff's
        dense scatter into a zero table.
        """
        # Sums over the fields as batched products x^T rows: 10x faster on CPU than a
        # broadcast multiply and a middle-axis ReduceSum (profiled), same sums.
        x_row = ops.expand_dims(weights, 1)  # (b, 1, F)
        linear = ops.reshape(self.bmm(x_row, rows_w), (-1, 1))  # sum_f w_f x_f
        s = ops.reshape(self.bmm(x_row, rows_v), (-1, self.emb_dim))  # sum_f e_f
        e = self.scale_rows(rows_v, weights)  # e_f = V_f x_f, (b, F, k)
        h = ops.reshape(e, (-1, self.field_size * self.emb_dim))
        return self.head(h, s, linear, self.squared_norm(h))

    def head(self, h: Tensor, s: Tensor, linear: Tensor, sq: Tensor) -> Tensor:
        """Logits from the flattened e (b, F*k), s = sum_f e_f, the linear term and sum e^2.

        The part after the embeddings, shared with the fused CPU kernels (deepfm_lib.kernels),
        which compute these four inputs in one pass.
        """
        fm = 0.5 * (ops.sum(s * s, 1, keepdim=True) - sq)
        for i in range(1, self.n_dense + 1):
            h = getattr(self, "dense_layer_" + str(i))(h)
        return linear + fm + h


def masked_mean(values: Tensor, row_mask: Tensor) -> Tensor:
    """Mean over the rows whose mask is 1: a padded batch's mean equals the unpadded one."""
    return ops.sum(values * row_mask) / ops.maximum(ops.sum(row_mask), 1.0)


class SumSquares(nn.Cell):
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


class DeepFMWithLoss(nn.Cell):
    """Mean sigmoid cross-entropy plus 0.5 * l2 * (sum V^2 + sum w^2) over the whole tables.

    The L2 term covers the entire tables, as the zoo's latest revision does (an older revision
    penalised only the rows gathered in the batch). ``row_mask`` (b, 1) of 1/0 lets a padded
    batch keep one compiled shape: the cross-entropy is averaged over the rows with mask 1
    only, so a padded batch gives the same loss and gradients as the unpadded one.
    Parameter names are not prefixed (``auto_prefix=False``) so checkpoints keep the zoo's.
    """

    def __init__(self, network: DeepFM, l2: float | None = None):
        super().__init__(auto_prefix=False)
        self.network = network
        self.l2 = float(network.config.l2 if l2 is None else l2)
        self.bce = ops.SigmoidCrossEntropyWithLogits()
        self.sum_squares = SumSquares()

    def construct(
        self, ids: Tensor, weights: Tensor, labels: Tensor, row_mask: Tensor | None = None
    ) -> Tensor:
        logits = self.network(ids, weights)
        ce = self.bce(logits, labels)
        data_loss = ops.mean(ce) if row_mask is None else masked_mean(ce, row_mask)
        return data_loss + self.regulariser()

    def regulariser(self) -> Tensor:
        """0.5 * l2 * (sum V^2 + sum w^2): the zoo's L2 over the whole tables."""
        net = self.network
        return 0.5 * self.l2 * (self.sum_squares(net.embedding_table) + self.sum_squares(net.fm_w))


def count_parameters(net: nn.Cell) -> int:
    """Trainable scalars: the figure the zoo's README quotes (it says 16.5M; it is 18.87M)."""
    return int(sum(p.size for p in net.trainable_params()))
