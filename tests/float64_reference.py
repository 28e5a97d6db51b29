"""EfficientNet-B0 inference in float64 numpy, straight from a checkpoint's tensors.

An independent second implementation (no TensorFlow ops) used as the exact answer when judging
float32 results: how far the official float32 numbers and ours each are from it says how much
of a difference between them float32 arithmetic explains. Written from the architecture facts
(SAME padding, BN epsilon 1e-3, swish, SE on the block input's channels); B0 only.
"""
import numpy as np

B0_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)
BN_EPSILON = 1e-3


def _same_padding(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _pad(x, kernel, stride):
    out_h, top, bottom = _same_padding(x.shape[1], kernel, stride)
    out_w, left, right = _same_padding(x.shape[2], kernel, stride)
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))), out_h, out_w


def conv2d(x, kernel, stride=1):
    """TF 'SAME' convolution, NHWC input, HWIO kernel."""
    size = kernel.shape[0]
    if size == 1 and stride == 1:
        return np.tensordot(x, kernel[0, 0], axes=([3], [0]))
    padded, out_h, out_w = _pad(x, size, stride)
    out = np.zeros(x.shape[:1] + (out_h, out_w, kernel.shape[3]))
    for i in range(size):
        for j in range(size):
            window = padded[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :]
            out += np.tensordot(window, kernel[i, j], axes=([3], [0]))
    return out


def depthwise_conv2d(x, kernel, stride=1):
    """TF 'SAME' depthwise convolution, kernel [k, k, C, 1]."""
    size = kernel.shape[0]
    padded, out_h, out_w = _pad(x, size, stride)
    out = np.zeros(x.shape[:1] + (out_h, out_w, x.shape[3]))
    for i in range(size):
        for j in range(size):
            out += padded[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :] * kernel[i, j, :, 0]
    return out


def sigmoid(x):
    with np.errstate(over="ignore"):  # exp overflows to inf for x < -709: the sigmoid is then 0
        return 1.0 / (1.0 + np.exp(-x))


def swish(x):
    return x * sigmoid(x)


class _Scope(object):
    def __init__(self, tensors, prefix):
        self.tensors, self.prefix = tensors, prefix

    def __call__(self, name):
        return self.tensors[self.prefix + name]

    def has(self, name):
        return self.prefix + name in self.tensors

    def batch_norm(self, x, name):
        mean, variance = self(name + "/moving_mean"), self(name + "/moving_variance")
        return (x - mean) / np.sqrt(variance + BN_EPSILON) * self(name + "/gamma") + self(name + "/beta")


def _block(x, scope, stride):
    inputs = x
    bn = 0
    if scope.has("conv2d_1/kernel"):  # blocks with an expand conv have two 1x1 convs
        x = swish(scope.batch_norm(conv2d(x, scope("conv2d/kernel")), "tpu_batch_normalization"))
        bn, project = 1, "conv2d_1/kernel"
    else:
        project = "conv2d/kernel"

    def suffix(k):
        return "tpu_batch_normalization" + ("_%d" % k if k else "")

    x = swish(scope.batch_norm(depthwise_conv2d(x, scope("depthwise_conv2d/depthwise_kernel"), stride), suffix(bn)))
    squeezed = x.mean(axis=(1, 2), keepdims=True)
    squeezed = swish(conv2d(squeezed, scope("se/conv2d/kernel")) + scope("se/conv2d/bias"))
    squeezed = conv2d(squeezed, scope("se/conv2d_1/kernel")) + scope("se/conv2d_1/bias")
    x = x * sigmoid(squeezed)
    x = scope.batch_norm(conv2d(x, scope(project)), suffix(bn + 1))
    if stride == 1 and inputs.shape[-1] == x.shape[-1]:
        x = x + inputs
    return x


def efficientnet_b0(images, tensors, prefix="efficientnet-b0/"):
    """(logits, features) for normalized NHWC images; `tensors` maps variable names to arrays."""
    tensors = {name: np.asarray(value, np.float64) for name, value in tensors.items()}
    x = np.asarray(images, np.float64)
    stem = _Scope(tensors, prefix + "stem/")
    x = swish(stem.batch_norm(conv2d(x, stem("conv2d/kernel"), 2), "tpu_batch_normalization"))
    for index, stride in enumerate(B0_STRIDES):
        x = _block(x, _Scope(tensors, prefix + "blocks_%d/" % index), stride)
    features = x
    head = _Scope(tensors, prefix + "head/")
    x = swish(head.batch_norm(conv2d(x, head("conv2d/kernel")), "tpu_batch_normalization"))
    logits = x.mean(axis=(1, 2)).dot(head("dense/kernel")) + head("dense/bias")
    return logits, features
