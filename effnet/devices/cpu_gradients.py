"""Training gradients that TensorFlow's CPU kernels compute faster than its own, for two ops.

- 1x1 convolutions: Conv2DBackpropInput/Filter handle a 1x1 stride-1 convolution through their general
  path; on small feature maps (the last blocks, the demo's 32 px images) they take 10 to 30 times as
  long as the matrix product they amount to (40 % of the demo's step). Over the pixels a 1x1
  convolution is a matrix product, so its gradients are two: dx = dy W^T and dW = x^T dy.
- Training batch norm: FusedBatchNormGradV3 was 18 % of the B0 step at 224 px; two channel sums and
  one elementwise pass give the same gradient faster.
The forward ops are unchanged (same values; export builds its own inference graph); every other op keeps
TensorFlow's gradient. Profiles and figures: docs/benchmarks.md. Used through
base.Device.gradient_overrides(): the CPU device applies them, GPU (cuDNN) and NPU keep their kernels.
"""
import tensorflow.compat.v1 as tf
from tensorflow.python.ops import nn_grad  # pylint: disable=g-direct-tensorflow-import

POINTWISE_CONV_GRADIENT = "EffnetPointwiseConv2DAsMatMul"


def _is_pointwise(op):
    kernel = op.inputs[1]
    return (kernel.shape[:2].as_list() == [1, 1] and kernel.shape[2:].is_fully_defined()
            and list(op.get_attr("strides")) == [1, 1, 1, 1] and list(op.get_attr("dilations")) == [1, 1, 1, 1]
            and op.get_attr("padding") in (b"SAME", b"VALID") and op.get_attr("data_format") == b"NHWC")


@tf.RegisterGradient(POINTWISE_CONV_GRADIENT)
def _pointwise_conv_gradient(op, grad):
    if not _is_pointwise(op):
        return nn_grad._Conv2DGrad(op, grad)  # pylint: disable=protected-access
    inputs, kernel = op.inputs
    in_channels, out_channels = kernel.shape[2:].as_list()
    pixels_grad = tf.reshape(grad, [-1, out_channels])
    matrix = tf.reshape(kernel, [in_channels, out_channels])
    inputs_grad = tf.matmul(pixels_grad, matrix, transpose_b=True)
    kernel_grad = tf.matmul(tf.reshape(inputs, [-1, in_channels]), pixels_grad, transpose_a=True)
    return tf.reshape(inputs_grad, tf.shape(inputs)), tf.reshape(kernel_grad, tf.shape(kernel))


BATCH_NORM_GRADIENT = "EffnetBatchNormGradElementwise"


@tf.RegisterGradient(BATCH_NORM_GRADIENT)
def _batch_norm_gradient(op, grad, *unused_statistics_grads):
    """Training-mode FusedBatchNormV3 (NHWC) gradient from two channel sums and one elementwise pass; the batch
    statistics outputs feed only the moving averages, so, as in TensorFlow's gradient, they carry none."""
    if not op.get_attr("is_training") or op.get_attr("data_format") != b"NHWC":
        return nn_grad._FusedBatchNormV3Grad(op, grad, *unused_statistics_grads)  # pylint: disable=protected-access
    inputs, scale = op.inputs[0], op.inputs[1]
    mean, unbiased_variance = op.outputs[1], op.outputs[2]
    count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], inputs.dtype)
    inverse_std = tf.rsqrt(unbiased_variance * (count - 1.0) / count + op.get_attr("epsilon"))
    axes = [0, 1, 2]
    grad_sum = tf.reduce_sum(grad, axes)
    scale_grad = inverse_std * (tf.reduce_sum(grad * inputs, axes) - mean * grad_sum)
    grad_factor = scale * inverse_std
    input_factor = -grad_factor * inverse_std * scale_grad / count
    shift = -grad_factor * grad_sum / count - input_factor * mean
    return grad * grad_factor + (inputs * input_factor + shift), scale_grad, grad_sum, None, None


OVERRIDES = {"Conv2D": POINTWISE_CONV_GRADIENT, "FusedBatchNormV3": BATCH_NORM_GRADIENT}
