"""Double of npu_bridge.estimator.npu.npu_loss_scale_manager (contrib.mixed_precision semantics)."""
import tensorflow.compat.v1 as tf

from npu_bridge import _recorder


class FixedLossScaleManager(object):
    """Constant loss scale; with enable_overflow_check the optimizer still skips non-finite steps."""

    def __init__(self, loss_scale, enable_overflow_check=True):
        if loss_scale < 1:
            raise ValueError("loss scale must be at least 1.")
        _recorder.record("FixedLossScaleManager", loss_scale=loss_scale,
                         enable_overflow_check=enable_overflow_check)
        self._loss_scale = tf.convert_to_tensor(loss_scale, dtype=tf.float32, name="loss_scale")
        self._enable_overflow_check = enable_overflow_check

    def get_loss_scale(self):
        return self._loss_scale

    def update_loss_scale(self, finite_grads):
        del finite_grads
        return tf.no_op()

    def get_enable_overflow_check(self):
        return self._enable_overflow_check


class ExponentialUpdateLossScaleManager(object):
    """Multiplies the scale by incr_ratio after incr_every_n_steps finite steps in a row, by
    decr_ratio (floor 1) after decr_every_n_nan_or_inf non-finite ones; growth stops below 3.4e38."""

    def __init__(self, init_loss_scale, incr_every_n_steps, decr_every_n_nan_or_inf=2, incr_ratio=2,
                 decr_ratio=0.8):
        _recorder.record("ExponentialUpdateLossScaleManager", init_loss_scale=init_loss_scale,
                         incr_every_n_steps=incr_every_n_steps,
                         decr_every_n_nan_or_inf=decr_every_n_nan_or_inf, incr_ratio=incr_ratio,
                         decr_ratio=decr_ratio)
        self._incr_every_n_steps = incr_every_n_steps
        self._decr_every_n_nan_or_inf = decr_every_n_nan_or_inf
        self._incr_ratio = incr_ratio
        self._decr_ratio = decr_ratio
        self._loss_scale = tf.Variable(tf.constant(init_loss_scale, tf.float32), name="loss_scale",
                                       trainable=False)
        self._num_good_steps = tf.Variable(0, name="good_steps", dtype=tf.int32, trainable=False)
        self._num_bad_steps = tf.Variable(0, name="bad_steps", dtype=tf.int32, trainable=False)

    def get_loss_scale(self):
        return self._loss_scale

    def _reset_stats(self):
        return tf.group(tf.assign(self._num_good_steps, 0), tf.assign(self._num_bad_steps, 0))

    def update_loss_scale(self, finite_grads):
        def if_finite():
            def increase():
                grown = tf.cond(self._loss_scale < 3.4e38 / self._incr_ratio,
                                lambda: self._loss_scale * self._incr_ratio, lambda: self._loss_scale)
                return tf.group(tf.assign(self._loss_scale, grown), self._reset_stats())

            return tf.cond(self._num_good_steps + 1 >= self._incr_every_n_steps, increase,
                           lambda: tf.assign_add(self._num_good_steps, 1).op)

        def if_not_finite():
            def decrease():
                shrunk = tf.maximum(1.0, self._loss_scale * self._decr_ratio)
                return tf.group(tf.assign(self._loss_scale, shrunk), self._reset_stats())

            def count():
                return tf.group(tf.assign_add(self._num_bad_steps, 1), tf.assign(self._num_good_steps, 0))

            return tf.cond(self._num_bad_steps + 1 >= self._decr_every_n_nan_or_inf, decrease, count)

        return tf.cond(finite_grads, if_finite, if_not_finite)

    def get_enable_overflow_check(self):
        return True
