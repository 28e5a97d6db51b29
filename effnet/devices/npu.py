"""Ascend 910 through npu_bridge: the NpuOptimizer session options, loss scaling, npu_ops.dropout and loop
sinking. The only module that imports npu_bridge (lazily, so CPU/GPU machines never need it)."""
import importlib
import json
import os
import re

import tensorflow.compat.v1 as tf
from absl import logging
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from effnet.devices import base
from effnet.devices.errors import DeviceError

# CANN precision modes (tf_adapter npu_attrs.cc kPrecisionModeList); the last four need a recent CANN.
PRECISION_MODES = ("allow_mix_precision", "allow_fp32_to_fp16", "force_fp16", "must_keep_origin_dtype",
                   "force_fp32", "cube_fp16in_fp32out", "allow_mix_precision_fp16",
                   "allow_mix_precision_bf16", "allow_fp32_to_bf16")
# Modes that run ops in float16, whose small range lets gradients underflow: these get loss scaling.
# bf16 has float32's range and must_keep_origin_dtype/force_fp32 keep our float32 graph, so no scaling.
LOSS_SCALED_MODES = ("allow_mix_precision", "allow_fp32_to_fp16", "force_fp16", "cube_fp16in_fp32out",
                     "allow_mix_precision_fp16")
DEFAULT_ITERATIONS_PER_LOOP = 100
NPU_ONLY_FLAGS = ("precision_mode", "iterations_per_loop", "modify_mixlist", "fusion_switch_file", "auto_tune",
                  "over_dump", "data_dump_flag", "profiling")
# Files the adapter reads: checked on every device (device.for_name), so a wrong path stops the run first.
NPU_FILE_FLAGS = ("modify_mixlist", "fusion_switch_file")
# The adapter's auto-tune modes (parameter auto_tune_mode): reinforcement learning and genetic algorithm tuning.
AUTO_TUNE_MODE = "RL,GA"
_DUMP_STEP_PATTERN = re.compile(r"^\d+(-\d+)?(\|\d+(-\d+)?)*$")


def import_error():
    """None when npu_bridge imports, else why not (any exception: a broken CANN install raises many kinds)."""
    try:
        importlib.import_module("npu_bridge.npu_init")
    except Exception as error:  # pylint: disable=broad-except
        return "%s: %s" % (type(error).__name__, error)
    return None


def _output_dir(path):
    """Absolute path (the adapter resolves paths from its own working directory), created if missing."""
    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    return path


class NpuDevice(base.Device):
    name = "npu"

    def __init__(self, flags_obj, training=True, foreign_flags=()):
        super(NpuDevice, self).__init__(flags_obj, training, foreign_flags)
        self.precision = flags_obj.precision_mode
        if training:
            self.iterations_per_loop = self._iterations_per_loop()
        self._check_flags()
        if self.loss_scaled:
            self._check_loss_scale_flags()

    @property
    def loss_scaled(self):
        return self.precision in LOSS_SCALED_MODES

    def _iterations_per_loop(self):
        value = self._flags.iterations_per_loop
        if value == -1:
            return DEFAULT_ITERATIONS_PER_LOOP
        if value < 1:
            raise DeviceError("--iterations_per_loop=%d: use a positive step count, or -1 for the NPU "
                              "default (%d)" % (value, DEFAULT_ITERATIONS_PER_LOOP))
        return value

    def _check_flags(self):
        f = self._flags
        if f.modify_mixlist:
            if not f.precision_mode.startswith("allow_mix_precision"):
                raise DeviceError("--modify_mixlist only works with an allow_mix_precision* --precision_mode "
                                  "(got %s): drop --modify_mixlist or use --precision_mode=allow_mix_precision"
                                  % f.precision_mode)
        for enabled, path_flag in (("over_dump", "over_dump_path"), ("data_dump_flag", "data_dump_path"),
                                   ("profiling", "profiling_dump_path")):
            if getattr(f, enabled) and not getattr(f, path_flag):
                raise DeviceError("--%s needs --%s=DIR" % (enabled, path_flag))
        if f.over_dump and f.data_dump_flag and (os.path.abspath(f.over_dump_path) !=
                                                 os.path.abspath(f.data_dump_path)):
            raise DeviceError("--over_dump and --data_dump_flag share the adapter's one dump_path: give "
                              "--over_dump_path and --data_dump_path the same directory")
        if f.data_dump_flag and not _DUMP_STEP_PATTERN.match(f.data_dump_step):
            raise DeviceError("--data_dump_step=%r: use step numbers and ranges joined by '|', e.g. '0|5|10-20'"
                              % f.data_dump_step)

    def session_config(self):
        """The NpuOptimizer custom optimizer and its options.

        In evaluation graph_run_mode stays at its default (1, training): 0 is documented for frozen-graph
        online inference, and nothing says it suits a graph restored from a checkpoint.
        """
        f = self._flags
        config = super(NpuDevice, self).session_config()
        rewrite_options = config.graph_options.rewrite_options
        # The adapter's graph optimizer replaces these grappler passes, which must stay off.
        rewrite_options.remapping = RewriterConfig.OFF
        rewrite_options.memory_optimization = RewriterConfig.OFF
        npu_optimizer = rewrite_options.custom_optimizers.add()
        npu_optimizer.name = "NpuOptimizer"
        options = npu_optimizer.parameter_map
        options["use_off_line"].b = True
        options["precision_mode"].s = tf.compat.as_bytes(self.precision)
        if self.iterations_per_loop > 1:
            # Loop sinking needs the input (GetNext) on the device too.
            options["enable_data_pre_proc"].b = True
            options["iterations_per_loop"].i = self.iterations_per_loop
        if self.rank_size > 1:
            options["hcom_parallel"].b = True
        if f.modify_mixlist:
            options["modify_mixlist"].s = tf.compat.as_bytes(os.path.abspath(f.modify_mixlist))
        if f.fusion_switch_file:
            options["fusion_switch_file"].s = tf.compat.as_bytes(os.path.abspath(f.fusion_switch_file))
        if f.auto_tune:
            options["auto_tune_mode"].s = tf.compat.as_bytes(AUTO_TUNE_MODE)
        if f.over_dump:
            options["enable_dump_debug"].b = True
            options["dump_path"].s = tf.compat.as_bytes(_output_dir(f.over_dump_path))
            options["dump_debug_mode"].s = b"all"
        if f.data_dump_flag:
            options["enable_dump"].b = True
            options["dump_path"].s = tf.compat.as_bytes(_output_dir(f.data_dump_path))
            options["dump_step"].s = tf.compat.as_bytes(f.data_dump_step)
            options["dump_mode"].s = b"all"
        if f.profiling:
            profiling_options = {"output": _output_dir(f.profiling_dump_path), "task_trace": "on"}
            options["profiling_mode"].b = True
            options["profiling_options"].s = tf.compat.as_bytes(json.dumps(profiling_options))
        return config

    def gradient_overrides(self):
        """TensorFlow's own gradients: CANN's convolution backprop kernels are fast."""
        return {}

    def dropout_fn(self):
        """npu_ops.dropout, which takes keep_prob and has no training switch, so it is gated here."""
        from npu_bridge.estimator import npu_ops  # pylint: disable=import-outside-toplevel

        def dropout(x, rate, training):
            return npu_ops.dropout(x, keep_prob=1.0 - rate) if training and rate > 0 else x

        return dropout

    def wrap_optimizer(self, optimizer):
        """NPUDistributedOptimizer (gradient allreduce, a no-op at RANK_SIZE 1), inside NPULossScaleOptimizer
        when --precision_mode computes in float16. Non-finite steps are skipped and do not advance
        global_step; with several ranks every rank takes the same skip decision."""
        # pylint: disable=import-outside-toplevel
        from npu_bridge.estimator.npu import npu_loss_scale_manager
        from npu_bridge.estimator.npu.npu_loss_scale_optimizer import NPULossScaleOptimizer
        from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer
        f = self._flags
        optimizer = NPUDistributedOptimizer(optimizer)
        if not self.loss_scaled:
            logging.info("precision_mode %s keeps float32 gradients: no loss scaling", self.precision)
            return optimizer
        if f.loss_scale_manager == "fixed":
            manager = npu_loss_scale_manager.FixedLossScaleManager(loss_scale=f.fixed_loss_scale)
        else:
            manager = npu_loss_scale_manager.ExponentialUpdateLossScaleManager(
                init_loss_scale=f.init_loss_scale, incr_every_n_steps=f.loss_scale_incr_every_n_steps,
                decr_every_n_nan_or_inf=2, decr_ratio=0.5)
        logging.info("loss scaling: %s", self._loss_scale_description())
        return NPULossScaleOptimizer(optimizer, manager, is_distributed=self.rank_size > 1)

    def finalize_train_op(self, sess, train_op):
        """With loop sinking, one session.run trains iterations_per_loop steps.

        Call it after variables are initialized or restored (it loads the loop count into local
        variables that local_variables_initializer would reset) and before the graph is finalized.
        """
        if self.iterations_per_loop == 1:
            return train_op
        from npu_bridge.estimator.npu import util  # pylint: disable=import-outside-toplevel
        logging.info("each session.run trains %d steps on the NPU", self.iterations_per_loop)
        return util.set_iteration_per_loop(sess, train_op, self.iterations_per_loop)
