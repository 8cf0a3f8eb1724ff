"""MobileNet V1 (Howard et al. 2017) as a float Graph: the published architecture with seeded random weights."""

import numpy as np

from ..graph import Graph, ModelError, Op, Tensor

__all__ = ["mobilenet_v1", "MOBILENET_V1_BLOCKS"]

# The 13 depthwise-separable blocks of Table 1 of the paper: (pointwise output channels at alpha 1, stride of the
# depthwise 3x3). The stem is a 3x3 stride-2 convolution to 32 channels.
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _depth(channels, alpha):
    # TF-slim's rule: int(d * alpha), at least 8 channels, so tiny width multipliers keep a usable network.
    return max(int(channels * alpha), 8)


def mobilenet_v1(alpha=1.0, resolution=224, classes=1000, seed=0, channels=3, head="conv", softmax=False):
    """MobileNet V1 float Graph, input [1, resolution, resolution, channels] in [-1, 1].

    Stem conv 3x3/2 to 32*alpha channels, 13 depthwise-separable blocks (depthwise 3x3 + pointwise 1x1, each
    with batch norm folded into a bias and a fused ReLU6), global average pool, then the classifier: head="conv"
    is the original 1x1 CONV_2D followed by RESHAPE to [1, classes] (as in TF-slim and the published .tflite);
    head="fc" a RESHAPE to [1, C] then FULLY_CONNECTED. softmax=False leaves the logits as the output: the host
    applies softmax to the dequantized logits (argmax, the class, does not need it). With 1000 classes at
    alpha 1, 224x224 RGB the network has 568,740,352 MACs and 4,209,088 weights.

    Weights are random (He-normal, seeded) with small random biases standing in for folded batch norm, so the
    activations stay in ReLU6's range through all 27 layers; cycle counts do not depend on the values.
    """
    if alpha <= 0 or resolution < 32 or classes < 1 or channels < 1:
        raise ModelError(f"mobilenet_v1: need alpha > 0, resolution >= 32, classes >= 1, channels >= 1; got "
                         f"alpha={alpha}, resolution={resolution}, classes={classes}, channels={channels}")
    if head not in ("conv", "fc"):
        raise ModelError(f"mobilenet_v1: head must be 'conv' or 'fc', got {head!r}")
    rng = np.random.default_rng(seed)
    tensors = {}
    ops = []

    def act_tensor(name, shape):
        tensors[name] = Tensor(name, tuple(int(d) for d in shape), "float32")
        return name

    def const(name, data):
        data = np.asarray(data, np.float32)
        tensors[name] = Tensor(name, tuple(data.shape), "float32", data)
        return name

    def he(shape, fan_in):
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)

    def bias(n):
        return rng.normal(0.0, 0.05, size=n).astype(np.float32)

    x = act_tensor("input", (1, resolution, resolution, channels))
    h = resolution
    cin = _depth(32, alpha)

    h = -(-h // 2)                          # SAME padding at stride 2: ceil(h / 2)
    name = "Conv2d_0"
    ops.append(Op("CONV_2D", [x, const(f"{name}/weights", he((cin, 3, 3, channels), 9 * channels)),
                              const(f"{name}/bias", bias(cin))],
                  [act_tensor(f"{name}/Relu6", (1, h, h, cin))],
                  dict(stride=(2, 2), padding="SAME", activation="RELU6"), name))
    x = f"{name}/Relu6"
    for i, (c, s) in enumerate(MOBILENET_V1_BLOCKS, start=1):
        cout = _depth(c, alpha)
        h = -(-h // s)
        name = f"Conv2d_{i}_depthwise"
        ops.append(Op("DEPTHWISE_CONV_2D", [x, const(f"{name}/weights", he((1, 3, 3, cin), 9)),
                                            const(f"{name}/bias", bias(cin))],
                      [act_tensor(f"{name}/Relu6", (1, h, h, cin))],
                      dict(stride=(s, s), padding="SAME", activation="RELU6", depth_multiplier=1), name))
        x = f"{name}/Relu6"
        name = f"Conv2d_{i}_pointwise"
        ops.append(Op("CONV_2D", [x, const(f"{name}/weights", he((cout, 1, 1, cin), cin)),
                                  const(f"{name}/bias", bias(cout))],
                      [act_tensor(f"{name}/Relu6", (1, h, h, cout))],
                      dict(stride=(1, 1), padding="SAME", activation="RELU6"), name))
        x = f"{name}/Relu6"
        cin = cout

    name = "AvgPool_1a"
    ops.append(Op("AVERAGE_POOL_2D", [x], [act_tensor(f"{name}/AvgPool", (1, 1, 1, cin))],
                  dict(filter=(h, h), stride=(1, 1), padding="VALID", activation="NONE"), name))
    x = f"{name}/AvgPool"
    # The logits layer has no batch norm: a real bias, kept small like the others.
    w_logits = he((classes, cin), cin)
    if head == "conv":
        name = "Conv2d_1c_1x1"
        ops.append(Op("CONV_2D", [x, const(f"{name}/weights", w_logits.reshape(classes, 1, 1, cin)),
                                  const(f"{name}/bias", bias(classes))],
                      [act_tensor(f"{name}/BiasAdd", (1, 1, 1, classes))],
                      dict(stride=(1, 1), padding="VALID", activation="NONE"), name))
        x = f"{name}/BiasAdd"
        ops.append(Op("RESHAPE", [x], [act_tensor("Logits", (1, classes))], dict(new_shape=(1, classes)),
                      "SpatialSqueeze"))
    else:
        ops.append(Op("RESHAPE", [x], [act_tensor("Flatten", (1, cin))], dict(new_shape=(1, cin)), "Flatten"))
        name = "Logits"
        ops.append(Op("FULLY_CONNECTED", ["Flatten", const(f"{name}/weights", w_logits),
                                          const(f"{name}/bias", bias(classes))],
                      [act_tensor("Logits", (1, classes))], dict(activation="NONE", keep_num_dims=False), name))
    out = "Logits"
    if softmax:
        ops.append(Op("SOFTMAX", [out], [act_tensor("Predictions", (1, classes))], dict(beta=1.0), "Predictions"))
        out = "Predictions"
    model = f"mobilenet_v1_{alpha:g}_{resolution}" + ("" if channels == 3 else f"_c{channels}")
    return Graph(tensors=tensors, ops=ops, inputs=["input"], outputs=[out], name=model)
