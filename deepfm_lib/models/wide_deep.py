"""Wide & Deep (Cheng et al. 2016) as the DeepFM paper compares it ("LR & DNN", 0.7981).

The wide part is the first-order term over the raw ids (no hand-made cross features, as in
the paper's comparison); the deep part the MLP over the field embeddings. DeepFM without
its FM term.
"""

from __future__ import annotations

from mindspore import Tensor

from deepfm_lib.config import ModelConfig
from deepfm_lib.models.base import EMBEDDING, LINEAR, CTRModel
from deepfm_lib.models.blocks import MLP, FieldEmbedding, LinearTerm


class WideDeep(CTRModel):
    """linear + MLP(e_1 .. e_F)."""

    TABLES = (LINEAR, EMBEDDING)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.linear = LinearTerm(config)
        self.embedding = FieldEmbedding(config)
        self.mlp = MLP(config)

    def from_rows(self, rows: tuple, weights: Tensor) -> Tensor:
        rows_w, rows_v = rows
        h, s, sq = self.embedding.from_rows(rows_v, weights)
        return self.head(h, s, self.linear.from_rows(rows_w, weights), sq)

    def head(self, h: Tensor, s: Tensor, linear: Tensor, sq: Tensor) -> Tensor:
        return linear + self.mlp(h)


MODEL = WideDeep
