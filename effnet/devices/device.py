"""Everything device-specific: Ascend 910 NPU (npu_bridge), GPU or CPU.

train.py and test.py call the same Device methods on every device; only this module imports
npu_bridge (lazily, so CPU/GPU machines never need it) and knows which session options, optimizer
wrappers and dropout op each device needs.
"""
import importlib
import json
import os
import re

from absl import flags
from absl import logging
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

import efficientnet_model
from effnet import tf_compat

DEVICES = ("auto", "npu", "gpu", "cpu")
# CANN precision modes (tf_adapter npu_attrs.cc kPrecisionModeList); the last four need a recent CANN.
PRECISION_MODES = ("allow_mix_precision", "allow_fp32_to_fp16", "force_fp16", "must_keep_origin_dtype",
                   "force_fp32", "cube_fp16in_fp32out", "allow_mix_precision_fp16",
                   "allow_mix_precision_bf16", "allow_fp32_to_bf16")
# Modes that run ops in float16, whose small range lets gradients underflow: these get loss scaling.
# bf16 has float32's range and must_keep_origin_dtype/force_fp32 keep our float32 graph, so no scaling.
LOSS_SCALED_MODES = ("allow_mix_precision", "allow_fp32_to_fp16", "force_fp16", "cube_fp16in_fp32out",
                     "allow_mix_precision_fp16")
NPU_DEFAULT_ITERATIONS_PER_LOOP = 100
NPU_ONLY_FLAGS = ("precision_mode", "iterations_per_loop", "modify_mixlist", "over_dump", "data_dump_flag",
                  "profiling")
GPU_ONLY_FLAGS = ("gpu_amp", "xla")
# Exported to every process by horovodrun (Gloo), Open MPI's mpirun and MPICH/Intel MPI, in this order.
HOROVOD_SIZE_VARIABLES = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")

flags.DEFINE_enum("device", "auto", DEVICES,
                  "Where to run: auto picks npu when npu_bridge imports, else gpu when TensorFlow sees one, "
                  "else cpu.")
flags.DEFINE_enum("precision_mode", "allow_mix_precision", PRECISION_MODES,
                  "NPU precision mode (CANN precision_mode). fp16 modes get loss scaling; ignored off the NPU.")
flags.DEFINE_integer("iterations_per_loop", -1,
                     "Training steps the NPU runs per session.run (loop sinking); -1 means %d on the NPU. "
                     "Always 1 on cpu/gpu and in evaluation." % NPU_DEFAULT_ITERATIONS_PER_LOOP)
flags.DEFINE_enum("loss_scale_manager", "exponential", ("exponential", "fixed"),
                  "Loss scaling for fp16 training (NPU fp16 precision modes, --gpu_amp): exponential "
                  "(dynamic: grows after --loss_scale_incr_every_n_steps finite steps, halves on overflow) "
                  "or fixed (--fixed_loss_scale). Steps with non-finite gradients are skipped either way.")
flags.DEFINE_float("init_loss_scale", 2.0 ** 10, "Initial loss scale of the exponential loss scale manager.")
flags.DEFINE_integer("loss_scale_incr_every_n_steps", 1000,
                     "Exponential loss scaling doubles the scale after this many finite steps in a row.")
flags.DEFINE_float("fixed_loss_scale", 1024.0, "Loss scale of --loss_scale_manager=fixed.")
flags.DEFINE_string("modify_mixlist", None,
                    "NPU: JSON file editing CANN's mixed-precision black/white/gray lists; needs an "
                    "allow_mix_precision* --precision_mode.")
flags.DEFINE_boolean("over_dump", False, "NPU: dump the operators that overflow to --over_dump_path.")
flags.DEFINE_string("over_dump_path", None, "NPU: directory for --over_dump (created when missing).")
flags.DEFINE_boolean("data_dump_flag", False,
                     "NPU: dump every operator's inputs and outputs at --data_dump_step to --data_dump_path.")
flags.DEFINE_string("data_dump_step", "10", "NPU: steps to dump, CANN syntax such as '10' or '0|5|10-20'.")
flags.DEFINE_string("data_dump_path", None, "NPU: directory for --data_dump_flag (created when missing).")
flags.DEFINE_boolean("profiling", False, "NPU: collect a CANN profile (task trace) into --profiling_dump_path.")
flags.DEFINE_string("profiling_dump_path", None, "NPU: directory for --profiling (created when missing).")
flags.DEFINE_boolean("gpu_amp", False,
                     "GPU: automatic mixed precision (float16 graph rewrite) with loss scaling.")
flags.DEFINE_boolean("xla", False, "GPU: compile the graph with XLA (global_jit_level ON_1).")
flags.DEFINE_integer("intra_op_threads", 0, "Threads inside one host op; 0 = TensorFlow's default.")
flags.DEFINE_integer("inter_op_threads", 0, "Host ops run in parallel; 0 = TensorFlow's default.")

_DUMP_STEP_PATTERN = re.compile(r"^\d+(-\d+)?(\|\d+(-\d+)?)*$")


class DeviceError(RuntimeError, ValueError):
    """The requested device or its options cannot be used; the message names the fix."""


def _npu_import_error():
    """None when npu_bridge imports, else why not (any exception: a broken CANN install raises many kinds)."""
    try:
        importlib.import_module("npu_bridge.npu_init")
    except Exception as error:  # pylint: disable=broad-except
        return "%s: %s" % (type(error).__name__, error)
    return None


def _gpu_visible():
    """Lists GPUs without allocating their memory (device_lib would)."""
    return bool(tf.config.experimental.list_physical_devices("GPU"))


def _detect():
    error = _npu_import_error()
    if error is None:
        return "npu"
    logging.info("npu_bridge not importable (%s); looking for a GPU", error)
    return "gpu" if _gpu_visible() else "cpu"


def resolve(flags_obj=None, training=True):
    """The Device chosen by --device (absl FLAGS unless flags_obj, any object with the flag attributes)."""
    flags_obj = flags.FLAGS if flags_obj is None else flags_obj
    name = flags_obj.device
    if name == "auto":
        name = _detect()
    elif name == "npu":
        error = _npu_import_error()
        if error is not None:
            raise DeviceError("npu_bridge is not importable (%s): run inside the ascend-tensorflow docker image "
                              "after sourcing CANN's set_env.sh, or use --device=cpu/gpu" % error)
    elif name == "gpu" and not _gpu_visible():
        raise DeviceError("--device=gpu but TensorFlow %s sees no GPU: %s, or use --device=cpu"
                          % (tf.__version__, tf_compat.GPU_INSTALL_HINT))
    return Device(name, flags_obj, training)


def _rank_from_env():
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


def _horovod_launch_size():
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
                              % (_horovod_launch_size(), type(error).__name__, error))
        self._hvd.init()
        self.rank_size, self.rank_id, self.local_rank = self._hvd.size(), self._hvd.rank(), self._hvd.local_rank()

    def distributed_optimizer(self, optimizer):
        return self._hvd.DistributedOptimizer(optimizer)

    def broadcast_variables(self, variables):
        return self._hvd.broadcast_variables(variables, root_rank=0)

    def allreduce_mean(self, tensor):
        return self._hvd.allreduce(tensor, op=self._hvd.Average)


def _collective(name, training):
    """How the processes of one training run talk: not at all, over HCCL (NPU) or over Horovod (GPU/CPU).

    Evaluation always runs as one process, whatever the environment says.
    """
    if not training:
        return SingleProcess()
    if name == "npu":
        size, rank = _rank_from_env()
        return Hccl(size, rank) if size > 1 else SingleProcess()
    if _horovod_launch_size() > 1:
        return Horovod()
    size, _ = _rank_from_env()
    if size > 1:
        raise DeviceError("RANK_SIZE=%d on %s: RANK_SIZE/RANK_ID start NPU ranks; on GPU/CPU several processes "
                          "train under Horovod: `RANK_SIZE=%d bash train_8p.sh --device=%s` or `horovodrun -np %d "
                          "python train.py ...` (unset RANK_SIZE for one process)" % (size, name, size, name, size))
    return SingleProcess()


def _changed(flags_obj, names):
    """Flags among `names` set away from their default."""
    changed = []
    for name in names:
        value, default = getattr(flags_obj, name), flags.FLAGS[name].default
        if name == "iterations_per_loop":
            changed += [name] if value not in (default, 1) else []
        elif value != default:
            changed.append(name)
    return changed


def _output_dir(path):
    """Absolute path (the adapter resolves paths from its own working directory), created if missing."""
    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    return path


class Device(object):
    """One resolved device: its name, precision, loop size and rank, and what it changes in the graph.

    With several processes (rank_size > 1) every rank builds the same graph; the device adds the
    gradient all-reduce (wrap_optimizer), the broadcast of rank 0's variables
    (broadcast_variables_op) and the averaging of batch-norm statistics (average_over_ranks_op).
    """

    def __init__(self, name, flags_obj, training=True):
        if name not in DEVICES[1:]:
            raise DeviceError("unknown device %r: use one of %s" % (name, ", ".join(DEVICES[1:])))
        self.name = name
        self.training = training
        self._flags = flags_obj
        self.collective = _collective(name, training)
        self.rank_size, self.rank_id = self.collective.rank_size, self.collective.rank_id
        self.is_chief = self.rank_id == 0
        ignored = _changed(flags_obj, NPU_ONLY_FLAGS if name != "npu" else ())
        ignored += _changed(flags_obj, GPU_ONLY_FLAGS if name != "gpu" else ())
        if ignored:
            logging.warning("ignoring --%s on device %s", ", --".join(ignored), name)
        self.iterations_per_loop = 1
        if name == "npu":
            self.precision = flags_obj.precision_mode
            if training:
                self.iterations_per_loop = self._npu_iterations_per_loop()
            self._check_npu_flags()
        elif name == "gpu" and flags_obj.gpu_amp:
            self.precision = "mixed"
        else:
            self.precision = "fp32"
        if self._loss_scaled():
            self._check_loss_scale_flags()

    def _npu_iterations_per_loop(self):
        value = self._flags.iterations_per_loop
        if value == -1:
            return NPU_DEFAULT_ITERATIONS_PER_LOOP
        if value < 1:
            raise DeviceError("--iterations_per_loop=%d: use a positive step count, or -1 for the NPU "
                              "default (%d)" % (value, NPU_DEFAULT_ITERATIONS_PER_LOOP))
        return value

    def _check_npu_flags(self):
        f = self._flags
        if f.modify_mixlist:
            if not f.precision_mode.startswith("allow_mix_precision"):
                raise DeviceError("--modify_mixlist only works with an allow_mix_precision* --precision_mode "
                                  "(got %s): drop --modify_mixlist or use --precision_mode=allow_mix_precision"
                                  % f.precision_mode)
            if not os.path.isfile(f.modify_mixlist):
                raise DeviceError("--modify_mixlist file not found: %s: pass the path of a mixlist JSON file"
                                  % f.modify_mixlist)
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

    def _loss_scaled(self):
        if self.name == "npu":
            return self.precision in LOSS_SCALED_MODES
        return self.name == "gpu" and self._flags.gpu_amp

    def _check_loss_scale_flags(self):
        f = self._flags
        if f.loss_scale_manager == "fixed" and f.fixed_loss_scale < 1:
            raise DeviceError("--fixed_loss_scale=%g: use a value >= 1, e.g. 1024" % f.fixed_loss_scale)
        if f.loss_scale_manager == "exponential" and (f.init_loss_scale < 1 or
                                                      f.loss_scale_incr_every_n_steps < 1):
            raise DeviceError("--init_loss_scale and --loss_scale_incr_every_n_steps must be >= 1 "
                              "(e.g. 1024 and 1000)")

    def describe(self):
        """One line for the log: device, precision, loop size and rank."""
        line = "device=%s precision=%s iterations_per_loop=%d rank=%d/%d mode=%s" % (
            self.name, self.precision, self.iterations_per_loop, self.rank_id, self.rank_size,
            "train" if self.training else "eval")
        return line + (" collective=%s" % self.collective.name if self.rank_size > 1 else "")

    def session_config(self):
        """tf.ConfigProto for every session on this device.

        In evaluation the NPU keeps graph_run_mode at its default (1, training): 0 is documented for
        frozen-graph online inference, and nothing says it suits a graph restored from a checkpoint.
        """
        f = self._flags
        config = tf.ConfigProto(allow_soft_placement=True)
        if f.intra_op_threads > 0:
            config.intra_op_parallelism_threads = f.intra_op_threads
        if f.inter_op_threads > 0:
            config.inter_op_parallelism_threads = f.inter_op_threads
        if self.name == "npu":
            self._add_npu_options(config)
        elif self.name == "gpu":
            config.gpu_options.allow_growth = True
            if self.rank_size > 1:
                # One GPU per process: the local rank's.
                config.gpu_options.visible_device_list = str(self.collective.local_rank)
            if f.gpu_amp:
                config.graph_options.rewrite_options.auto_mixed_precision = RewriterConfig.ON
            if f.xla:
                config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
        return config

    def _add_npu_options(self, config):
        f = self._flags
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

    def dropout_fn(self):
        """callable(x, rate, training) for the model head; training is a Python bool (identity when False).

        Off the NPU this is the model's own dropout; on it, npu_ops.dropout, which takes keep_prob and
        has no training switch, so it is gated here.
        """
        if self.name != "npu":
            return efficientnet_model.default_dropout
        from npu_bridge.estimator import npu_ops  # pylint: disable=import-outside-toplevel

        def dropout(x, rate, training):
            return npu_ops.dropout(x, keep_prob=1.0 - rate) if training and rate > 0 else x

        return dropout

    def wrap_optimizer(self, optimizer):
        """The optimizer this device trains with.

        NPU: NPUDistributedOptimizer (gradient allreduce, a no-op at RANK_SIZE 1), inside
        NPULossScaleOptimizer when --precision_mode computes in float16. GPU with --gpu_amp:
        MixedPrecisionLossScaleOptimizer, the loss scaling that session_config()'s float16 rewrite
        (auto_mixed_precision) lacks, the same on TF 1.15 and 2.x (the process-wide
        enable_mixed_precision_graph_rewrite is deprecated on 2.x and not needed: every session here
        takes session_config()); its dynamic scale halves at each overflow. Non-finite steps are
        skipped and do not advance global_step. GPU/CPU with several processes: hvd.DistributedOptimizer
        (gradients averaged over the ranks) inside the loss scaling, as on the NPU, so every rank takes
        the same skip decision. CPU in one process: unchanged.
        """
        f = self._flags
        fixed = f.loss_scale_manager == "fixed"
        if self.name == "npu":
            # pylint: disable=import-outside-toplevel
            from npu_bridge.estimator.npu import npu_loss_scale_manager
            from npu_bridge.estimator.npu.npu_loss_scale_optimizer import NPULossScaleOptimizer
            from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer
            optimizer = NPUDistributedOptimizer(optimizer)
            if not self._loss_scaled():
                logging.info("precision_mode %s keeps float32 gradients: no loss scaling", self.precision)
                return optimizer
            if fixed:
                manager = npu_loss_scale_manager.FixedLossScaleManager(loss_scale=f.fixed_loss_scale)
            else:
                manager = npu_loss_scale_manager.ExponentialUpdateLossScaleManager(
                    init_loss_scale=f.init_loss_scale, incr_every_n_steps=f.loss_scale_incr_every_n_steps,
                    decr_every_n_nan_or_inf=2, decr_ratio=0.5)
            logging.info("loss scaling: %s", self._loss_scale_description())
            return NPULossScaleOptimizer(optimizer, manager, is_distributed=self.rank_size > 1)
        if self.rank_size > 1:
            optimizer = self.collective.distributed_optimizer(optimizer)
        if self._loss_scaled():
            if fixed:
                loss_scale = f.fixed_loss_scale
            else:
                loss_scale = tf.train.experimental.DynamicLossScale(
                    initial_loss_scale=f.init_loss_scale, increment_period=f.loss_scale_incr_every_n_steps,
                    multiplier=2.0)
            logging.info("automatic mixed precision, loss scaling: %s", self._loss_scale_description())
            return tf.train.experimental.MixedPrecisionLossScaleOptimizer(optimizer, loss_scale)
        return optimizer

    def _loss_scale_description(self):
        f = self._flags
        if f.loss_scale_manager == "fixed":
            return "fixed %g" % f.fixed_loss_scale
        return "dynamic, from %g, x2 after %d finite steps" % (f.init_loss_scale,
                                                              f.loss_scale_incr_every_n_steps)

    def finalize_train_op(self, sess, train_op):
        """The op to run each session.run: on the NPU with a loop, one run trains iterations_per_loop steps.

        Call it after variables are initialized or restored (it loads the loop count into local
        variables that local_variables_initializer would reset) and before the graph is finalized.
        """
        if self.iterations_per_loop == 1:
            return train_op
        from npu_bridge.estimator.npu import util  # pylint: disable=import-outside-toplevel
        logging.info("each session.run trains %d steps on the NPU", self.iterations_per_loop)
        return util.set_iteration_per_loop(sess, train_op, self.iterations_per_loop)

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
