"""Double of npu_bridge.estimator.npu_ops: dropout takes keep_prob and has no training switch."""
import numbers

import tensorflow.compat.v1 as tf

from npu_bridge import _recorder


def dropout(x, keep_prob, noise_shape=None, seed=None, name=None):
    """Like the adapter's DropOutGenMask/DropOutDoMask pair, computed with tf.nn.dropout."""
    if tf.executing_eagerly():
        raise RuntimeError("npu_ops.dropout() is not compatible with eager execution.")
    x = tf.convert_to_tensor(x, name="x")
    if not x.dtype.is_floating:
        raise ValueError("x has to be a floating point tensor since it's going to be scaled. "
                         "Got a %s tensor instead." % x.dtype)
    if isinstance(keep_prob, numbers.Real) and not 0 < keep_prob <= 1:
        raise ValueError("keep_prob must be a scalar tensor or a float in the range (0, 1], got %g" % keep_prob)
    _recorder.record("dropout", keep_prob=keep_prob, noise_shape=noise_shape, seed=seed, name=name,
                     graph=x.graph)
    if isinstance(keep_prob, numbers.Real) and keep_prob == 1:
        return x
    return tf.nn.dropout(x, noise_shape=noise_shape, seed=seed, name=name, rate=1 - keep_prob)
