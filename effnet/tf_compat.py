"""The one place where TensorFlow 1.15 and TensorFlow 2.x differ for this package.

Everything else is written against `tensorflow.compat.v1` in graph mode and runs unchanged on both:
importing this module (efficientnet_model and preprocess do) turns TF 2.x's v2 behaviour off
(graph mode, reference variables, v1 control flow and shapes, as in TF 1.15).

Sigmoid, swish and the spatial mean use each version's native kernels. They round differently:
TF 1.15's CPU `Sigmoid` kernel is a rational approximation (input clamped to [-18, 18], absolute
error up to 1.9e-7, so relative error of several hundred percent for x < -9), TF 2.x computes
sigmoid to within about 2e-7 relative, and the two `Mean` kernels sum in different orders. A barely
trained network amplifies these 1e-7 differences by 1e3..1e5 on its way to the logits, so one
checkpoint does not give bit-equal logits on both versions. Judged against a float64 reference
(tests/float64_reference.py), TF 2.x's float32 result is as close to the exact answer as TF 1.15's
(the official code's) or closer, and the native kernels make TF 2.15's B0 training step 1.22-1.31x
faster on the CPU than evaluating TF 1.15's approximation with elementwise ops did.
"""
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


def sigmoid(x):
    """tf.sigmoid (this version's native kernel; see the module docstring)."""
    return tf.sigmoid(x)


def swish(x):
    """tf.nn.swish: x * sigmoid(x) with its memory-saving custom gradient."""
    return tf.nn.swish(x)


def spatial_mean(x, keepdims=False):
    """Mean over height and width of an NHWC tensor (tf.reduce_mean, this version's native kernel)."""
    return tf.reduce_mean(x, [1, 2], keepdims=keepdims)
