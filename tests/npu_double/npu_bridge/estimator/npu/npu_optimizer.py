"""Double of npu_bridge.estimator.npu.npu_optimizer.NPUDistributedOptimizer."""
import os

import tensorflow.compat.v1 as tf

from npu_bridge import _recorder


class NPUDistributedOptimizer(tf.train.Optimizer):
    """Averages gradients over RANK_SIZE ranks with HCCL on the device; one host process is one rank here."""

    def __init__(self, optimizer, is_weight_update_sharding=False, name=None):
        if name is None:
            name = "Distributed%s" % type(optimizer).__name__
        self._optimizer = optimizer
        self._is_weight_update_sharding = is_weight_update_sharding
        _recorder.record("NPUDistributedOptimizer", optimizer=optimizer,
                         is_weight_update_sharding=is_weight_update_sharding, name=name)
        super(NPUDistributedOptimizer, self).__init__(name=name, use_locking=False)

    def compute_gradients(self, *args, **kwargs):
        gradients = self._optimizer.compute_gradients(*args, **kwargs)
        rank_size = int(os.getenv("RANK_SIZE") or 1)
        if rank_size > 1:
            # The mean of one rank's gradients over identical copies is the gradient itself.
            _recorder.record("allreduce", rank_size=rank_size, count=len(gradients))
        return gradients

    def apply_gradients(self, *args, **kwargs):
        return self._optimizer.apply_gradients(*args, **kwargs)

    def get_slot(self, *args, **kwargs):
        return self._optimizer.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        return self._optimizer.get_slot_names(*args, **kwargs)

    def variables(self, *args, **kwargs):
        return self._optimizer.variables(*args, **kwargs)
