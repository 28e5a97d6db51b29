"""How the processes of one training run talk: not at all, over HCCL (NPU) or over Horovod (GPU/CPU)."""
import importlib
import os

import tensorflow.compat.v1 as tf

from effnet.devices.errors import DeviceError

# Exported to every process by horovodrun (Gloo), Open MPI's mpirun and MPICH/Intel MPI, in this order.
HOROVOD_SIZE_VARIABLES = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def rank_from_env():
    """(RANK_SIZE, RANK_ID) as exported by the launchers, defaults (1, 0)."""
    size, rank = os.environ.get("RANK_SIZE") or "1", os.environ.get("RANK_ID") or "0"
    try:
        size, rank = int(size), int(rank)
    except ValueError:
        raise DeviceError("RANK_SIZE=%r and RANK_ID=%r must be integers: export RANK_SIZE=<devices> and "
                          "RANK_ID=0..RANK_SIZE-1 for each process" % (size, rank))
    if size < 1 or not 0 <= rank < size:
        raise DeviceError("RANK_ID=%d is outside 0..RANK_SIZE-1 (RANK_SIZE=%d): export RANK_ID=0..%d"
                          % (rank, size, size - 1))
    return size, rank


def horovod_launch_size():
    """Processes in the job when horovodrun or mpirun started this one (they export these), else 1."""
    for name in HOROVOD_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


class SingleProcess(object):
    """One process: nothing to share."""
    name = "none"
    rank_size, rank_id = 1, 0


class Hccl(object):
    """Ascend: HCCL collectives through npu_bridge's hccl_ops.

    Rank and size come from RANK_ID/RANK_SIZE, which the adapter reads too; hccl's get_rank_id()
    would need an initialize_system session before the training one.
    """
    name = "hccl"

    def __init__(self, rank_size, rank_id):
        if not os.path.isfile(os.environ.get("RANK_TABLE_FILE") or ""):
            raise DeviceError("RANK_SIZE=%d on the NPU needs RANK_TABLE_FILE, the rank table HCCL reads (now %r): "
                              "start with train_8p.sh, or write one with scripts/make_rank_table.py and export "
                              "RANK_TABLE_FILE" % (rank_size, os.environ.get("RANK_TABLE_FILE", "")))
        self.rank_size, self.rank_id = rank_size, rank_id

    def broadcast_variables(self, variables):
        from npu_bridge.hccl import hccl_ops  # pylint: disable=import-outside-toplevel
        with tf.name_scope("broadcast_from_rank0"):
            values = hccl_ops.broadcast([tf.identity(v.value(), name=v.op.name) for v in variables], root_rank=0)
            return tf.group(*[tf.assign(v, value) for v, value in zip(variables, values)])

    def allreduce_mean(self, tensor):
        from npu_bridge.hccl import hccl_ops  # pylint: disable=import-outside-toplevel
        return hccl_ops.allreduce(tensor, "sum") / float(self.rank_size)


class Horovod(object):
    """GPU and CPU: Horovod (NCCL, Gloo or MPI), in a process started by horovodrun or mpirun."""
    name = "horovod"

    def __init__(self):
        try:
            self._hvd = importlib.import_module("horovod.tensorflow")
        except Exception as error:  # pylint: disable=broad-except
            raise DeviceError("this process was started for a %d-process run but horovod.tensorflow does not "
                              "import (%s: %s): install Horovod with `bash scripts/install_horovod.sh`"
                              % (horovod_launch_size(), type(error).__name__, error))
        self._hvd.init()
        self.rank_size, self.rank_id, self.local_rank = self._hvd.size(), self._hvd.rank(), self._hvd.local_rank()

    def distributed_optimizer(self, optimizer):
        return self._hvd.DistributedOptimizer(optimizer)

    def broadcast_variables(self, variables):
        return self._hvd.broadcast_variables(variables, root_rank=0)

    def allreduce_mean(self, tensor):
        return self._hvd.allreduce(tensor, op=self._hvd.Average)


def for_device(name, training):
    """The collective of a run on device `name`. Evaluation always runs as one process, whatever the
    environment says."""
    if not training:
        return SingleProcess()
    if name == "npu":
        size, rank = rank_from_env()
        return Hccl(size, rank) if size > 1 else SingleProcess()
    if horovod_launch_size() > 1:
        return Horovod()
    size, _ = rank_from_env()
    if size > 1:
        raise DeviceError("RANK_SIZE=%d on %s: RANK_SIZE/RANK_ID start NPU ranks; on GPU/CPU several processes "
                          "train under Horovod: `RANK_SIZE=%d bash train_8p.sh --device=%s` or `horovodrun -np %d "
                          "python train.py ...` (unset RANK_SIZE for one process)" % (size, name, size, name, size))
    return SingleProcess()
