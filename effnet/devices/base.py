"""What every device shares: rank and collectives, host threads, loss-scale checks, loop rounding.

CPU runs this as it is; effnet/devices/npu.py and gpu.py add their own session options, optimizer
wrappers and dropout.
"""
import tensorflow.compat.v1 as tf
from absl import flags, logging

import efficientnet_model
from effnet.devices import collectives, cpu_gradients
from effnet.devices.errors import DeviceError

CPU_ONLY_FLAGS = ("cpu_fast_gradients",)


def changed_flags(flags_obj, names):
    """Flags among `names` set away from their default (iterations_per_loop=1 counts as unchanged)."""
    changed = []
    for name in names:
        value, default = getattr(flags_obj, name), flags.FLAGS[name].default
        if name == "iterations_per_loop":
            changed += [name] if value not in (default, 1) else []
        elif value != default:
            changed.append(name)
    return changed


class Device(object):
    """One resolved device: its name, precision, loop size and rank, and what it changes in the graph.

    With several processes (rank_size > 1) every rank builds the same graph; the device adds the
    gradient all-reduce (wrap_optimizer), the broadcast of rank 0's variables
    (broadcast_variables_op) and the averaging of batch-norm statistics (average_over_ranks_op).
    `foreign_flags` are the other devices' flags: set on this one, they are ignored with a warning.
    """
    name = "cpu"

    def __init__(self, flags_obj, training=True, foreign_flags=()):
        self.training = training
        self._flags = flags_obj
        self.collective = collectives.for_device(self.name, training)
        self.rank_size, self.rank_id = self.collective.rank_size, self.collective.rank_id
        self.is_chief = self.rank_id == 0
        self.iterations_per_loop = 1
        self.precision = "fp32"
        ignored = changed_flags(flags_obj, foreign_flags)
        if ignored:
            logging.warning("ignoring --%s on device %s", ", --".join(ignored), self.name)

    @property
    def loss_scaled(self):
        """Whether gradients are computed in float16 and need loss scaling."""
        return False

    def _check_loss_scale_flags(self):
        f = self._flags
        if f.loss_scale_manager == "fixed" and f.fixed_loss_scale < 1:
            raise DeviceError("--fixed_loss_scale=%g: use a value >= 1, e.g. 1024" % f.fixed_loss_scale)
        if f.loss_scale_manager == "exponential" and (f.init_loss_scale < 1 or
                                                      f.loss_scale_incr_every_n_steps < 1):
            raise DeviceError("--init_loss_scale and --loss_scale_incr_every_n_steps must be >= 1 "
                              "(e.g. 1024 and 1000)")

    def _loss_scale_description(self):
        f = self._flags
        if f.loss_scale_manager == "fixed":
            return "fixed %g" % f.fixed_loss_scale
        return "dynamic, from %g, x2 after %d finite steps" % (f.init_loss_scale,
                                                              f.loss_scale_incr_every_n_steps)

    def describe(self):
        """One line for the log: device, precision, loop size and rank."""
        line = "device=%s precision=%s iterations_per_loop=%d rank=%d/%d mode=%s" % (
            self.name, self.precision, self.iterations_per_loop, self.rank_id, self.rank_size,
            "train" if self.training else "eval")
        return line + (" collective=%s" % self.collective.name if self.rank_size > 1 else "")

    def session_config(self):
        """tf.ConfigProto for every session on this device."""
        f = self._flags
        config = tf.ConfigProto(allow_soft_placement=True)
        if f.intra_op_threads > 0:
            config.intra_op_parallelism_threads = f.intra_op_threads
        if f.inter_op_threads > 0:
            config.inter_op_parallelism_threads = f.inter_op_threads
        return config

    def gradient_overrides(self):
        """Op type -> registered gradient for the training graph (tf.Graph.gradient_override_map): on the
        CPU, the 1x1 convolutions' and batch norms' gradients that run faster on its kernels
        (effnet/devices/cpu_gradients.py)."""
        return dict(cpu_gradients.OVERRIDES) if self._flags.cpu_fast_gradients else {}

    def dropout_fn(self):
        """callable(x, rate, training) for the model head; training is a Python bool (identity when False)."""
        return efficientnet_model.default_dropout

    def wrap_optimizer(self, optimizer):
        """The optimizer this device trains with: with several processes, gradients averaged over the ranks
        (hvd.DistributedOptimizer); in one process, unchanged."""
        if self.rank_size > 1:
            optimizer = self.collective.distributed_optimizer(optimizer)
        return optimizer

    def finalize_train_op(self, sess, train_op):
        """The op to run each session.run (one step; the NPU overrides this for loop sinking)."""
        del sess
        return train_op

    def round_to_loop(self, steps, what):
        """`steps` rounded up to a multiple of iterations_per_loop (values <= 0 mean 'off' and stay)."""
        loop = self.iterations_per_loop
        if steps <= 0 or steps % loop == 0:
            return steps
        rounded = -(-steps // loop) * loop
        logging.info("%s: rounded %d up to %d, a multiple of iterations_per_loop=%d", what, steps, rounded, loop)
        return rounded

    def broadcast_variables_op(self, variables):
        """An op setting `variables` on every rank to rank 0's values; None with one process.

        Run it once after the variables are initialized, restored or loaded, so that all ranks start
        from the same state (weights, batch-norm statistics, optimizer slots, EMA shadows, global step).
        """
        if self.rank_size == 1:
            return None
        return self.collective.broadcast_variables(list(variables))

    def average_over_ranks_op(self, variables):
        """An op replacing each of `variables` with its mean over the ranks (one all-reduce); None with
        one process. Reads happen inside the caller's control dependencies."""
        if self.rank_size == 1 or not variables:
            return None
        with tf.name_scope("average_over_ranks"):
            flat = tf.concat([tf.reshape(v.read_value(), [-1]) for v in variables], axis=0, name="values")
            means = tf.split(self.collective.allreduce_mean(flat), [v.shape.num_elements() for v in variables])
            return tf.group(*[tf.assign(v, tf.reshape(mean, v.shape)) for v, mean in zip(variables, means)])

    def shard_info(self):
        """(num_workers, worker_index) for sharding the input pipeline."""
        return self.rank_size, self.rank_id
