"""The model zoo's DeepFM training step, as its code is written, for a same-machine baseline.

The issue quotes the zoo's own train.py at 9,300 and 12,700 samples/s, but on a machine
whose fp32 MatMul limit was 430 GFLOP/s: no CPU this project runs on need match it. This
module rebuilds the zoo's training graph op for op (model_zoo .../deepfm/src/deepfm.py,
written here from its published structure, not copied) so benchmarks/train.py can time it
beside ours in the same script:

- lookups with Gather; e = V[ids] * x as a broadcasting Mul by the (b, F, 1) weights; the
  linear term and the FM sums as ReduceSum over the field axis; FM = 0.5 * sum_k(s^2 - sum_f e^2);
- dense layers as MatMul + BiasAdd with ReLU; the zoo's float16 casts are left out
  (they are slower on this CPU, which would flatter the comparison);
- loss: mean sigmoid cross-entropy + 0.5 * l2 * (sum V^2 + sum w^2) over the whole tables,
  Square + ReduceSum, as the zoo's NetWithLossClass does;
- the zoo's TrainStepWrap: gradients of the whole loss by autodiff with a fixed sens
  (loss scale), then dense Adam with that loss scale (nn.TrainOneStepCell does the same).

Parameter shapes equal deepfm_lib.models.deepfm.DeepFM's (18,867,222 at the zoo config).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, ParameterTuple, nn, ops
from mindspore.common.initializer import Normal, initializer


def _param(shape: list[int], std: float, name: str) -> Parameter:
    return Parameter(initializer(Normal(sigma=std), shape, ms.float32), name=name)


class ZooDeepFM(nn.Cell):
    """Logits from (ids, weights) with the zoo's ops."""

    def __init__(self, vocab: int, fields: int, emb: int, layers: tuple[int, ...], std: float):
        super().__init__()
        self.fields, self.emb = fields, emb
        self.fm_w = _param([vocab, 1], std, "W_l2")
        self.embedding_table = _param([vocab, emb], std, "V_l2")
        dims = [fields * emb, *layers, 1]
        self.weights = ParameterTuple(
            [
                _param([i, o], std, f"dense_layer_{k}.weight")
                for k, (i, o) in enumerate(zip(dims[:-1], dims[1:], strict=True), 1)
            ]
        )
        self.biases = ParameterTuple(
            [_param([o], std, f"dense_layer_{k}.bias") for k, o in enumerate(dims[1:], 1)]
        )
        self.gather = ops.Gather()
        self.mul = ops.Mul()
        self.reduce_sum = ops.ReduceSum(keep_dims=False)
        self.square = ops.Square()
        self.matmul = ops.MatMul()
        self.bias_add = ops.BiasAdd()
        self.relu = ops.ReLU()
        self.n_layers = len(dims) - 1

    def construct(self, ids, weights):
        mask = ops.reshape(weights, (-1, self.fields, 1))
        wx = self.mul(self.gather(self.fm_w, ids, 0), mask)
        linear = ops.reshape(self.reduce_sum(wx, 1), (-1, 1))
        vx = self.mul(self.gather(self.embedding_table, ids, 0), mask)
        square_of_sum = self.square(self.reduce_sum(vx, 1))
        sum_of_square = self.reduce_sum(self.square(vx), 1)
        fm = 0.5 * ops.reshape(self.reduce_sum(square_of_sum - sum_of_square, 1), (-1, 1))
        h = ops.reshape(vx, (-1, self.fields * self.emb))
        for k in range(self.n_layers):
            h = self.bias_add(self.matmul(h, self.weights[k]), self.biases[k])
            if k < self.n_layers - 1:
                h = self.relu(h)
        return linear + fm + h


class ZooLoss(nn.Cell):
    """Mean cross-entropy + 0.5 * l2 * (sum V^2 + sum w^2), Square + ReduceSum as in the zoo."""

    def __init__(self, net: ZooDeepFM, l2: float):
        super().__init__(auto_prefix=False)
        self.net, self.l2 = net, l2
        self.bce = ops.SigmoidCrossEntropyWithLogits()
        self.reduce_sum = ops.ReduceSum(keep_dims=False)
        self.reduce_mean = ops.ReduceMean(keep_dims=False)
        self.square = ops.Square()

    def construct(self, ids, weights, labels):
        loss = self.reduce_mean(self.bce(self.net(ids, weights), labels))
        reg = self.reduce_sum(self.square(self.net.embedding_table)) + self.reduce_sum(
            self.square(self.net.fm_w)
        )
        return loss + 0.5 * self.l2 * reg


def zoo_train_step(cfg, lr: float, eps: float, loss_scale: float) -> nn.Cell:
    """step(ids, weights, labels) -> loss: the zoo's TrainStepWrap around its loss."""
    net = ZooDeepFM(cfg.vocab_size, cfg.field_size, cfg.emb_dim, cfg.deep_layers, cfg.init_std)
    opt = nn.Adam(net.trainable_params(), learning_rate=lr, eps=eps, loss_scale=loss_scale)
    return nn.TrainOneStepCell(ZooLoss(net, cfg.l2), opt, sens=loss_scale)
