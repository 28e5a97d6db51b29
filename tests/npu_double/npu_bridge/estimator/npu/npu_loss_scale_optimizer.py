"""Double of npu_bridge.estimator.npu.npu_loss_scale_optimizer.NPULossScaleOptimizer.

The adapter reads the device's float-status register to detect overflow; the double checks the
gradients with tf.is_finite, which gives the same decision on the host.
"""
import tensorflow.compat.v1 as tf

from npu_bridge import _recorder


class NPULossScaleOptimizer(tf.train.Optimizer):
    """Scales the loss, unscales the gradients, skips the whole update (global_step included) when
    any gradient is non-finite, and lets the manager adjust the scale."""

    def __init__(self, opt, loss_scale_manager, is_distributed=False):
        _recorder.record("NPULossScaleOptimizer", opt=opt, loss_scale_manager=loss_scale_manager,
                         is_distributed=is_distributed)
        self._opt = opt
        self._loss_scale_manager = loss_scale_manager
        self._is_distributed = is_distributed
        super(NPULossScaleOptimizer, self).__init__(name="NPULossScaleOptimizer", use_locking=False)

    def compute_gradients(self, loss, var_list=None, gate_gradients=tf.train.Optimizer.GATE_OP,
                          aggregation_method=None, colocate_gradients_with_ops=False, grad_loss=None):
        loss_scale = self._loss_scale_manager.get_loss_scale()
        scaled_loss = loss * tf.cast(loss_scale, loss.dtype.base_dtype)
        grads_and_vars = self._opt.compute_gradients(
            scaled_loss, var_list=var_list, gate_gradients=gate_gradients,
            aggregation_method=aggregation_method, colocate_gradients_with_ops=colocate_gradients_with_ops,
            grad_loss=grad_loss)
        inverse = tf.reciprocal(loss_scale)
        unscaled = []
        for grad, var in grads_and_vars:
            if isinstance(grad, tf.IndexedSlices):
                grad = tf.IndexedSlices(grad.values * tf.cast(inverse, grad.dtype.base_dtype), grad.indices,
                                        grad.dense_shape)
            elif grad is not None:
                grad = grad * tf.cast(inverse, grad.dtype.base_dtype)
            unscaled.append((grad, var))
        return unscaled

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = list(grads_and_vars)
        if self._loss_scale_manager.get_enable_overflow_check():
            grads = [g.values if isinstance(g, tf.IndexedSlices) else g for g, _ in grads_and_vars
                     if g is not None]
            is_overall_finite = tf.reduce_all([tf.reduce_all(tf.is_finite(g)) for g in grads])
        else:
            is_overall_finite = tf.constant(True)

        def apply_fn():
            return self._opt.apply_gradients(grads_and_vars, global_step, name)

        update_variables = tf.cond(is_overall_finite, apply_fn, tf.no_op)
        return tf.group(update_variables, self._loss_scale_manager.update_loss_scale(is_overall_finite))

    def get_slot(self, *args, **kwargs):
        return self._opt.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        return self._opt.get_slot_names(*args, **kwargs)

    def variables(self, *args, **kwargs):
        return self._opt.variables(*args, **kwargs)
