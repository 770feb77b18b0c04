"""DNN: the MLP over the field embeddings alone (BARS's "DNN"; the paper's FNN without
its FM pre-training). DeepFM without the linear and FM terms; one table, so it trains on
MindSpore's kernels.
"""

from __future__ import annotations

from mindspore import Tensor

from deepfm_lib.config import ModelConfig
from deepfm_lib.models.base import EMBEDDING, CTRModel
from deepfm_lib.models.blocks import MLP, FieldEmbedding


class DNN(CTRModel):
    """MLP(e_1 .. e_F)."""

    TABLES = (EMBEDDING,)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.embedding = FieldEmbedding(config)
        self.mlp = MLP(config)

    def from_rows(self, rows: tuple, weights: Tensor) -> Tensor:
        h, _, _ = self.embedding.from_rows(rows[0], weights)
        return self.mlp(h)


MODEL = DNN
