"""NVIDIA GPUs: memory growth, one GPU per Horovod process, automatic mixed precision with loss scaling, XLA."""
import tensorflow.compat.v1 as tf
from absl import logging
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from effnet.devices import base

GPU_ONLY_FLAGS = ("gpu_amp", "xla")


def visible():
    """Lists GPUs without allocating their memory (device_lib would)."""
    return bool(tf.config.experimental.list_physical_devices("GPU"))


class GpuDevice(base.Device):
    name = "gpu"

    def __init__(self, flags_obj, training=True, foreign_flags=()):
        super(GpuDevice, self).__init__(flags_obj, training, foreign_flags)
        if flags_obj.gpu_amp:
            self.precision = "mixed"
            self._check_loss_scale_flags()

    @property
    def loss_scaled(self):
        return bool(self._flags.gpu_amp)

    def session_config(self):
        f = self._flags
        config = super(GpuDevice, self).session_config()
        config.gpu_options.allow_growth = True
        if self.rank_size > 1:
            # One GPU per process: the local rank's.
            config.gpu_options.visible_device_list = str(self.collective.local_rank)
        if f.gpu_amp:
            config.graph_options.rewrite_options.auto_mixed_precision = RewriterConfig.ON
        if f.xla:
            config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
        return config

    def gradient_overrides(self):
        """TensorFlow's own gradients: cuDNN's convolution backprop kernels are fast."""
        return {}

    def wrap_optimizer(self, optimizer):
        """With --gpu_amp: MixedPrecisionLossScaleOptimizer, the loss scaling that session_config()'s float16
        rewrite (auto_mixed_precision) lacks, the same on TF 1.15 and 2.x (the process-wide
        enable_mixed_precision_graph_rewrite is deprecated on 2.x and not needed: every session here takes
        session_config()); its dynamic scale halves at each overflow and non-finite steps are skipped.
        With several processes hvd.DistributedOptimizer sits inside the loss scaling, as on the NPU, so
        every rank takes the same skip decision."""
        f = self._flags
        optimizer = super(GpuDevice, self).wrap_optimizer(optimizer)
        if not self.loss_scaled:
            return optimizer
        if f.loss_scale_manager == "fixed":
            loss_scale = f.fixed_loss_scale
        else:
            loss_scale = tf.train.experimental.DynamicLossScale(
                initial_loss_scale=f.init_loss_scale, increment_period=f.loss_scale_incr_every_n_steps,
                multiplier=2.0)
        logging.info("automatic mixed precision, loss scaling: %s", self._loss_scale_description())
        return tf.train.experimental.MixedPrecisionLossScaleOptimizer(optimizer, loss_scale)
