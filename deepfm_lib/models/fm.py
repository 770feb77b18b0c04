"""FM (Rendle 2010): the first-order term plus pairwise field interactions, no MLP.

DeepFM without its deep part; the paper's Table 2 scores it 0.7892 on Criteo. Same tables,
names and initialisation as DeepFM, so the two differ only by the MLP.
"""

from __future__ import annotations

from mindspore import Tensor

from deepfm_lib.config import ModelConfig
from deepfm_lib.models.base import EMBEDDING, LINEAR, CTRModel
from deepfm_lib.models.blocks import FieldEmbedding, FMInteraction, LinearTerm


class FM(CTRModel):
    """linear + sum_{i<j} <e_i, e_j>."""

    TABLES = (LINEAR, EMBEDDING)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.linear = LinearTerm(config)
        self.embedding = FieldEmbedding(config)
        self.fm = FMInteraction()

    def from_rows(self, rows: tuple, weights: Tensor) -> Tensor:
        rows_w, rows_v = rows
        _, s, sq = self.embedding.from_rows(rows_v, weights)
        return self.head(None, s, self.linear.from_rows(rows_w, weights), sq)

    def head(self, h: Tensor, s: Tensor, linear: Tensor, sq: Tensor) -> Tensor:
        return linear + self.fm(s, sq)


MODEL = FM
