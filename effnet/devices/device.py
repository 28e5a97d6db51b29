"""The device layer's face: its flags (defined by define_flags) and resolve(), which picks the Ascend 910 NPU
(npu_bridge), a GPU or the CPU and returns that device's object (effnet/devices/npu.py, gpu.py, or the plain
base.Device for the CPU).

train.py and test.py call the same Device methods on every device; each device's specifics live in its own
module, and only npu.py imports npu_bridge.
"""
import os

import tensorflow.compat.v1 as tf
from absl import flags, logging

from effnet import tf_compat
from effnet.devices import base, gpu, npu
from effnet.devices.errors import DeviceError  # noqa: F401  (callers catch device.DeviceError)

DEVICES = ("auto", "npu", "gpu", "cpu")
_CLASSES = {"npu": npu.NpuDevice, "gpu": gpu.GpuDevice, "cpu": base.Device}
_OWN_FLAGS = {"npu": npu.NPU_ONLY_FLAGS, "gpu": gpu.GPU_ONLY_FLAGS, "cpu": base.CPU_ONLY_FLAGS}


def define_flags():
    """Defines the device flags that resolve() reads (the entry points call it through
    evaluation.define_flags; bench/train_step.py calls it itself)."""
    flags.DEFINE_enum("device", "auto", DEVICES,
                      "Where to run: auto picks npu when npu_bridge imports, else gpu when TensorFlow sees one, "
                      "else cpu.")
    flags.DEFINE_enum("precision_mode", "allow_mix_precision", npu.PRECISION_MODES,
                      "NPU precision mode (CANN precision_mode). fp16 modes get loss scaling; ignored off the NPU.")
    flags.DEFINE_integer("iterations_per_loop", -1,
                         "Training steps the NPU runs per session.run (loop sinking); -1 means %d on the NPU. "
                         "Always 1 on cpu/gpu and in evaluation." % npu.DEFAULT_ITERATIONS_PER_LOOP)
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
    flags.DEFINE_string("fusion_switch_file", None,
                        "NPU: JSON file switching CANN graph/UB fusion passes off (configs/fusion_switch.cfg), for "
                        "locating an accuracy or performance problem a fusion causes.")
    flags.DEFINE_boolean("auto_tune", False,
                         "NPU: tune operator tiling while compiling (auto_tune_mode %s; slow the first time, the "
                         "results are kept by CANN). Newer CANN versions replaced it with AOE." % npu.AUTO_TUNE_MODE)
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
    flags.DEFINE_boolean("cpu_fast_gradients", True,
                         "CPU: train with the 1x1-convolution and batch-norm gradients that run faster on its kernels "
                         "(effnet/devices/cpu_gradients.py, same values); --nocpu_fast_gradients uses TensorFlow's.")


def _detect():
    error = npu.import_error()
    if error is None:
        return "npu"
    logging.info("npu_bridge not importable (%s); looking for a GPU", error)
    return "gpu" if gpu.visible() else "cpu"


def _check_files(flags_obj):
    """Raises DeviceError naming the first NPU option whose file does not exist (on every device)."""
    for name in npu.NPU_FILE_FLAGS:
        path = getattr(flags_obj, name)
        if path and not os.path.isfile(path):
            raise DeviceError("--%s file not found: %s (resolved from %s): pass the path of an existing file, "
                              "e.g. the one in configs/" % (name, path, os.getcwd()))


def for_name(name, flags_obj, training=True):
    """The device object for `name` ("npu", "gpu" or "cpu") with the flag values in flags_obj."""
    if name not in _CLASSES:
        raise DeviceError("unknown device %r: use one of %s" % (name, ", ".join(DEVICES[1:])))
    _check_files(flags_obj)
    foreign = [flag for other, own in _OWN_FLAGS.items() if other != name for flag in own]
    return _CLASSES[name](flags_obj, training, foreign)


def resolve(flags_obj=None, training=True):
    """The device chosen by --device (absl FLAGS unless flags_obj, any object with the flag attributes)."""
    flags_obj = flags.FLAGS if flags_obj is None else flags_obj
    name = flags_obj.device
    if name == "auto":
        name = _detect()
    elif name == "npu":
        error = npu.import_error()
        if error is not None:
            raise DeviceError("npu_bridge is not importable (%s): run inside the ascend-tensorflow docker image "
                              "after sourcing CANN's set_env.sh, or use --device=cpu/gpu" % error)
    elif name == "gpu" and not gpu.visible():
        raise DeviceError("--device=gpu but TensorFlow %s sees no GPU: %s, or use --device=cpu"
                          % (tf.__version__, tf_compat.GPU_INSTALL_HINT))
    return for_name(name, flags_obj, training)
