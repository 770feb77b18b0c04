"""Logistic regression: the first-order term alone, the paper's baseline (0.7686 on Criteo).

One weight per kept value (and per dense field, times its value); no global bias, like the
other models here: every row carries 26 categorical fields of weight 1, whose weights absorb
it. One table, so it trains on MindSpore's kernels (the fused ones need both tables).
"""

from __future__ import annotations

from mindspore import Tensor

from deepfm_lib.config import ModelConfig
from deepfm_lib.models.base import LINEAR, CTRModel
from deepfm_lib.models.blocks import LinearTerm


class LR(CTRModel):
    """sum_f w[id_f] x_f."""

    TABLES = (LINEAR,)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.linear = LinearTerm(config)

    def from_rows(self, rows: tuple, weights: Tensor) -> Tensor:
        return self.linear.from_rows(rows[0], weights)


MODEL = LR
