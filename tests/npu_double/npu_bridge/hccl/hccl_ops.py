"""Double of npu_bridge.hccl.hccl_ops: collectives over the RANK_SIZE ranks of the rank table.

Each process of a double run is one rank that cannot reach the others, so the double answers as if
every rank held this rank's values: broadcast returns its inputs, allreduce 'sum' returns
RANK_SIZE x the input (so sum / RANK_SIZE, the mean, is the input). Both record what they were given,
and broadcast also records each time its result is computed ('broadcast_run').
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf

from npu_bridge import _recorder

REDUCTIONS = ("sum", "prod", "max", "min")


def _rank_size():
    return int(os.getenv("RANK_SIZE") or 1)


def allreduce(tensor, reduction, fusion=1, fusion_id=-1, group="hccl_world_group"):
    if reduction not in REDUCTIONS:
        raise ValueError("reduction must be one of %s, got %r" % (", ".join(REDUCTIONS), reduction))
    tensor = tf.convert_to_tensor(tensor)
    _recorder.record("hccl_allreduce", reduction=reduction, tensor=tensor.name, shape=tensor.shape.as_list(),
                     fusion=fusion, fusion_id=fusion_id, group=group)
    size = _rank_size()
    if reduction == "sum":
        return tensor * tf.cast(size, tensor.dtype)
    if reduction == "prod":
        return tf.pow(tensor, tf.cast(size, tensor.dtype))
    return tf.identity(tensor)


def broadcast(tensor, root_rank, fusion=2, fusion_id=0, group="hccl_world_group"):
    """`tensor` is a list of tensors, and so is the result (as in the adapter)."""
    if not isinstance(tensor, (list, tuple)):
        raise TypeError("broadcast takes a list of tensors, got %s" % type(tensor).__name__)
    tensors = [tf.convert_to_tensor(t) for t in tensor]
    _recorder.record("broadcast", tensors=[t.name for t in tensors], root_rank=root_rank, fusion=fusion,
                     fusion_id=fusion_id, group=group)

    def mark_run():
        _recorder.record("broadcast_run", count=len(tensors), root_rank=root_rank)
        return np.int32(0)

    ran = tf.numpy_function(mark_run, [], tf.int32, name="broadcast_run")
    with tf.control_dependencies([ran]):
        return [tf.identity(t) for t in tensors]
