"""The one place where TensorFlow 1.15 and TensorFlow 2.x differ for this package.

Everything else is written against `tensorflow.compat.v1` in graph mode and runs unchanged on both:
importing this module (efficientnet_model and preprocess do) turns TF 2.x's v2 behaviour off
(graph mode, reference variables, v1 control flow and shapes, as in TF 1.15).

Sigmoid: TF 1.15's CPU `Sigmoid` kernel (used by `tf.sigmoid` and `tf.nn.swish`) evaluates a
rational approximation (odd degree-9 numerator over even degree-10 denominator, input clamped to
[-18, 18], summed without fused multiply-adds). Its absolute error is up to 1.9e-7, so for x < -9
its relative error reaches several hundred percent (sigmoid(-18) comes out as 2**-23 instead of
1.5e-8). TF 2.x computes sigmoid to within 2e-7 relative. Lite models (ReLU6, no
squeeze-excitation) never call it, and agree across versions to 5e-7; every B model calls it in
each swish and squeeze-excitation gate, and a barely trained network (large activations, batch-norm
statistics of a few images) amplifies that 1e-7 difference by 1e3..1e5 on its way to the logits.
On TF 2.x, `sigmoid` and `swish` therefore evaluate the same approximation with elementwise ops
(bit-identical to the TF 1.15 kernel on the CPU), and `spatial_mean` sums as TF 1.15 does, so one
checkpoint gives the same logits on both. Not on a GPU: cuDNN's own rounding already differs
between machines and versions, and there the native kernels are faster (see `tf115_values`).
"""
import functools

import tensorflow.compat.v1 as tf

IS_TF2 = tf.__version__.startswith("2.")
if IS_TF2:
    from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import

    # The compat.v1 API this package is written against is deprecated on 2.x by design; its warnings
    # (one per call site, each printed twice) would bury the training log.
    deprecation._PRINT_DEPRECATION_WARNINGS = False  # pylint: disable=protected-access
    tf.disable_v2_behavior()

# What --device=gpu needs when TensorFlow sees no GPU.
if IS_TF2:
    GPU_INSTALL_HINT = ("install the GPU build into this python (pip install 'tensorflow[and-cuda]==%s' pulls "
                        "CUDA and cuDNN) with a recent NVIDIA driver" % tf.__version__)
else:
    GPU_INSTALL_HINT = "install CUDA 10.0 + cuDNN 7 for tensorflow 1.15 (Volta and older GPUs)"

# Coefficients of the TF 1.15 (Eigen) approximation: sigmoid(x) ~ 0.5 + x * P(x^2) / Q(x^2).
_NUMERATOR = (2.48287947061529e-01, 8.51377133304701e-03, 6.08574864600143e-05, 1.15627324459942e-07,
              4.37031012579801e-11)
_DENOMINATOR = (9.93151921023180e-01, 1.16817656904453e-01, 1.70198817374094e-03, 6.29106785017040e-06,
                5.76102136993427e-09, 6.10247389755681e-13)
_CLAMP = 18.0


def _horner(x_squared, coefficients):
    """coefficients[0] + c[1] x^2 + ..., evaluated highest power first, one multiply and one add per step."""
    result = x_squared * coefficients[-1] + coefficients[-2]
    for coefficient in reversed(coefficients[:-2]):
        result = x_squared * result + coefficient
    return result


def _tf115_sigmoid_values(x):
    clamped = tf.clip_by_value(x, -_CLAMP, _CLAMP)
    x_squared = clamped * clamped
    ratio = clamped * _horner(x_squared, _NUMERATOR) / _horner(x_squared, _DENOMINATOR)
    return tf.clip_by_value(ratio + 0.5, 0.0, 1.0)


@tf.custom_gradient
def _tf115_sigmoid(x):
    y = _tf115_sigmoid_values(x)

    def grad(dy):
        return dy * y * (1.0 - y)

    return y, grad


@tf.custom_gradient
def _tf115_swish(x):
    gate = _tf115_sigmoid_values(x)

    def grad(dy):
        return dy * gate * (1.0 + x * (1.0 - gate))

    return x * gate, grad


@functools.lru_cache(maxsize=None)
def _gpu_visible():
    return bool(tf.config.experimental.list_physical_devices("GPU"))


def tf115_values(x):
    """Whether to compute `x`'s activations as TF 1.15's CPU kernels do: on TF 2.x, for float32, without a GPU."""
    return IS_TF2 and x.dtype == tf.float32 and not _gpu_visible()


def sigmoid(x):
    """tf.sigmoid with TF 1.15's values on every version (see the module docstring)."""
    if tf115_values(x):
        return _tf115_sigmoid(x)
    return tf.sigmoid(x)


def swish(x):
    """x * sigmoid(x) with TF 1.15's values on every version, gradient as tf.nn.swish's."""
    if tf115_values(x):
        return _tf115_swish(x)
    return tf.nn.swish(x)


def spatial_mean(x, keepdims=False):
    """Mean over height and width of an NHWC tensor, with TF 1.15's values on every version.

    TF 1.15's CPU Mean kernel sums in an order that the AvgPool kernel reproduces bit for bit (on
    both versions); TF 2.x's Mean sums more accurately but differently (1e-4 apart on a 112x112
    map), which the squeeze-excitation gates amplify. Unknown spatial sizes fall back to Mean.
    """
    height, width = x.shape[1], x.shape[2]
    if not tf115_values(x) or tf.dimension_value(height) is None or tf.dimension_value(width) is None:
        return tf.reduce_mean(x, [1, 2], keepdims=keepdims)
    pooled = tf.nn.avg_pool(x, ksize=[1, int(height), int(width), 1], strides=[1, 1, 1, 1], padding="VALID")
    return pooled if keepdims else tf.squeeze(pooled, [1, 2])
