"""Double of npu_bridge.npu_init: what `from npu_bridge.npu_init import *` provides that we use."""
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from npu_bridge.estimator import npu_ops
from npu_bridge.estimator.npu import util
from npu_bridge.estimator.npu.npu_loss_scale_manager import ExponentialUpdateLossScaleManager, FixedLossScaleManager
from npu_bridge.estimator.npu.npu_loss_scale_optimizer import NPULossScaleOptimizer
from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer
from npu_bridge.hccl import hccl_ops

__all__ = ["tf", "config_pb2", "RewriterConfig", "npu_ops", "hccl_ops", "util", "NPUDistributedOptimizer",
           "NPULossScaleOptimizer", "FixedLossScaleManager", "ExponentialUpdateLossScaleManager",
           "npu_config_proto", "npu_tf_optimizer"]


def npu_config_proto(config_proto=None):
    """Adds the NpuOptimizer custom optimizer and the options the adapter needs, as the real helper does."""
    config = config_proto if config_proto is not None else config_pb2.ConfigProto()
    rewrite_options = config.graph_options.rewrite_options
    if not any(op.name == "NpuOptimizer" for op in rewrite_options.custom_optimizers):
        rewrite_options.custom_optimizers.add().name = "NpuOptimizer"
        rewrite_options.memory_optimization = RewriterConfig.OFF
    config.allow_soft_placement = True
    config.log_device_placement = False
    rewrite_options.remapping = RewriterConfig.OFF
    config.graph_options.optimizer_options.global_jit_level = config_pb2.OptimizerOptions.OFF
    return config


def npu_tf_optimizer(opt):
    return NPUDistributedOptimizer(opt)
