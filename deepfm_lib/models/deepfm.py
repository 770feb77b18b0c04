"""DeepFM (Guo et al. 2017), laid out like the MindSpore model zoo's so its checkpoints map.

The zoo's network (model_zoo/official/recommend/deepfm/src/deepfm.py, latest revision) is:
the linear term sum_f w[id_f] x_f (no global bias), the FM term on e_f = V[id_f] x_f, and an
MLP on the flattened e_f; logit = linear + FM + MLP. The zoo saves ``fm_w`` and
``embedding_table`` under the Parameter names ``W_l2`` and ``V_l2``; deepfm_lib.zoo.checkpoint
maps them. The zoo's MLP runs in float16 on Ascend; here ``precision`` chooses.
"""

from __future__ import annotations

from mindspore import Tensor

from deepfm_lib.config import ModelConfig
from deepfm_lib.models.base import EMBEDDING, LINEAR, CTRModel
from deepfm_lib.models.blocks import MLP, FieldEmbedding, FMInteraction, LinearTerm


class DeepFM(CTRModel):
    """linear + FM + MLP over the same field embeddings: the paper's shared-input design."""

    TABLES = (LINEAR, EMBEDDING)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.linear = LinearTerm(config)
        self.embedding = FieldEmbedding(config)
        self.fm = FMInteraction()
        self.mlp = MLP(config)

    def from_rows(self, rows: tuple, weights: Tensor) -> Tensor:
        rows_w, rows_v = rows
        h, s, sq = self.embedding.from_rows(rows_v, weights)
        return self.head(h, s, self.linear.from_rows(rows_w, weights), sq)

    def head(self, h: Tensor, s: Tensor, linear: Tensor, sq: Tensor) -> Tensor:
        return linear + self.fm(s, sq) + self.mlp(h)


MODEL = DeepFM
