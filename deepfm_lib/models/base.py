"""What every model of the study is to the engine: a small contract, one loss.

The train step (deepfm_lib.engine.step) never names a model's parameters. It asks:

- ``tables()``: the (vocab, d) tables read by id (``fm_w``, ``embedding_table``, or one of
  them). Their gradients are assembled from the gathered rows, and Adam (dense or lazy)
  and the L2 term apply to them; every other parameter is the dense part (the MLP).
- ``from_rows(rows, weights)``: logits from each table's rows already gathered for the
  batch's ids, in ``tables()`` order. The step differentiates with respect to those rows
  instead of autodiff's dense scatter into a zero table.
- ``head(h, s, linear, sq)``, for a model holding both tables: logits from the
  quantities the fused CPU kernels compute in one pass (deepfm_lib.models.blocks
  FieldEmbedding, LinearTerm). Such a model can train on those kernels.

``construct(ids, weights)`` gathers and calls ``from_rows``, so inference, export and a
NumPy check see an ordinary Cell. Parameter names are not prefixed (``auto_prefix=False``)
so every checkpoint carries the zoo's names.
"""

from __future__ import annotations

from mindspore import Tensor, nn, ops

from deepfm_lib.config import ModelConfig
from deepfm_lib.models.blocks import TableSumSquares, masked_mean

__all__ = [
    "EMBEDDING",
    "LINEAR",
    "CTRModel",
    "ModelWithLoss",
    "count_parameters",
    "data_loss",
    "l2_penalty",
]

LINEAR = ("linear", "fm_w")  # blocks.LinearTerm held as `linear`
EMBEDDING = ("embedding", "embedding_table")  # blocks.FieldEmbedding as `embedding`


class CTRModel(nn.Cell):
    """Base of the registered models: holds the config, gathers rows, lists its tables."""

    def __init__(self, config: ModelConfig):
        super().__init__(auto_prefix=False)
        self.config = config
        self.field_size = config.field_size
        self.emb_dim = config.emb_dim

    # (block attribute, table attribute) of each id-indexed table, in the order
    # (fm_w, embedding_table); a subclass lists the ones it holds.
    TABLES: tuple[tuple[str, str], ...] = ()

    def tables(self) -> tuple:
        """The model's id-indexed tables (Parameters), in ``TABLES`` order."""
        return tuple(getattr(getattr(self, block), name) for block, name in self.TABLES)

    @property
    def fusable(self) -> bool:
        """Whether the fused CPU kernels can run its embedding side (both tables, a head)."""
        return len(self.tables()) == 2 and type(self).head is not CTRModel.head

    def construct(self, ids: Tensor, weights: Tensor) -> Tensor:
        rows = ()
        for block, name in self.TABLES:
            rows = rows + (ops.gather(getattr(getattr(self, block), name), ids, 0),)
        return self.from_rows(rows, weights)

    def from_rows(self, rows: tuple, weights: Tensor) -> Tensor:
        raise NotImplementedError

    def head(self, h: Tensor, s: Tensor, linear: Tensor, sq: Tensor) -> Tensor:
        raise NotImplementedError


# The objective, defined once: data_loss + l2_penalty. ModelWithLoss composes the two; the
# train step (deepfm_lib.engine.step) builds gradients by hand but calls the same two
# functions on every path, and tests/test_step.py checks each path's loss and update
# against autodiff through ModelWithLoss.
_BCE = ops.SigmoidCrossEntropyWithLogits()


def data_loss(logits: Tensor, labels: Tensor, row_mask: Tensor | None = None) -> Tensor:
    """Mean sigmoid cross-entropy over the real rows (``row_mask`` 1), or over all rows."""
    ce = _BCE(logits, labels)
    return ops.mean(ce) if row_mask is None else masked_mean(ce, row_mask)


def l2_penalty(l2: float, sum_squares: Tensor) -> Tensor:
    """0.5 * l2 * the tables' sum of squares (the zoo's L2, on the embedding tables only)."""
    return 0.5 * l2 * sum_squares


class ModelWithLoss(nn.Cell):
    """Mean sigmoid cross-entropy plus 0.5 * l2 * (sum of squares of the whole tables).

    The L2 term covers the entire tables, as the zoo's latest revision does (an older revision
    penalised only the rows gathered in the batch). ``row_mask`` (b, 1) of 1/0 lets a padded
    batch keep one compiled shape: the cross-entropy is averaged over the rows with mask 1
    only, so a padded batch gives the same loss and gradients as the unpadded one.
    """

    def __init__(self, network: CTRModel, l2: float | None = None):
        super().__init__(auto_prefix=False)
        self.network = network
        self.l2 = float(network.config.l2 if l2 is None else l2)
        self.sum_squares = TableSumSquares()
        self.table_params = network.tables()

    def construct(
        self, ids: Tensor, weights: Tensor, labels: Tensor, row_mask: Tensor | None = None
    ) -> Tensor:
        return data_loss(self.network(ids, weights), labels, row_mask) + self.regulariser()

    def regulariser(self) -> Tensor:
        """0.5 * l2 * sum of the tables' squares: the zoo's L2 over the whole tables."""
        total = 0.0
        for table in self.table_params:
            total = total + self.sum_squares(table)
        return l2_penalty(self.l2, total)


def count_parameters(net: nn.Cell) -> int:
    """Trainable scalars: the figure the zoo's README quotes (it says 16.5M; it is 18.87M)."""
    return int(sum(p.size for p in net.trainable_params()))
