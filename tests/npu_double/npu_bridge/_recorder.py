"""What the double was asked to do, and the tf.Session patch that emulates device-side loops.

CALLS is a list of (name, kwargs) tuples in call order. Names: 'Session' (config),
'loop_run' (iterations), 'dropout' (keep_prob, ...), 'set_iteration_per_loop', 'NPUDistributedOptimizer',
'allreduce', 'NPULossScaleOptimizer', 'FixedLossScaleManager', 'ExponentialUpdateLossScaleManager',
'broadcast' (tensors, root_rank), 'broadcast_run' (count), 'hccl_allreduce' (reduction, tensor, shape),
'environment' (pid and rank variables, first when NPU_DOUBLE_CALLS_DIR is set).

With NPU_DOUBLE_CALLS_DIR set, each process writes its CALLS at exit to
$NPU_DOUBLE_CALLS_DIR/calls_rank<RANK_ID>.json (see dump()).
"""
import atexit
import base64
import json
import os

from tensorflow.python.client import session as _session
from tensorflow.python.util import nest

CALLS = []
# Graph collection holding the IterationOp(s) built by util.set_iteration_per_loop.
LOOP_OPS_COLLECTION = "npu_double_iteration_ops"
# Collection the real adapter loads with iterations_per_loop - 1 (estimator/npu/util.py).
ITERATIONS_VAR_COLLECTION = "npu_runconfig_iterations_per_loop"

_ORIGINAL = {}

# NpuOptimizer parameter_map keys the caller may set, with the AttrValue field of each (types from the
# adapter's npu_attrs.cc / NPUEstimator), so a misspelled key or a wrong type fails here as on the device.
NPU_OPTION_TYPES = {
    "use_off_line": "b", "enable_data_pre_proc": "b", "iterations_per_loop": "i", "precision_mode": "s",
    "modify_mixlist": "s", "fusion_switch_file": "s", "auto_tune_mode": "s", "mix_compile_mode": "b",
    "graph_run_mode": "i", "hcom_parallel": "b", "enable_dump": "b", "dump_path": "s", "dump_step": "s",
    "dump_mode": "s", "enable_dump_debug": "b", "dump_debug_mode": "s", "profiling_mode": "b",
    "profiling_options": "s",
}
# Options naming a file the adapter opens from its own working directory: the double wants absolute,
# existing paths.
NPU_FILE_OPTIONS = ("modify_mixlist", "fusion_switch_file")
AUTO_TUNE_MODES = ("RL", "GA")


def check_npu_options(config):
    """Raises ValueError when the NpuOptimizer entry of `config` has an unknown key, a value of the wrong
    type, a relative or missing file, or an auto_tune_mode outside RL/GA."""
    if config is None:
        return
    for optimizer in config.graph_options.rewrite_options.custom_optimizers:
        if optimizer.name != "NpuOptimizer":
            continue
        for key, value in optimizer.parameter_map.items():
            if key not in NPU_OPTION_TYPES:
                raise ValueError("NpuOptimizer: unknown option %r" % key)
            if value.WhichOneof("value") != NPU_OPTION_TYPES[key]:
                raise ValueError("NpuOptimizer: option %r must be of type %s" % (key, NPU_OPTION_TYPES[key]))
        options = optimizer.parameter_map
        for key in NPU_FILE_OPTIONS:
            if key in options:
                path = options[key].s.decode()
                if not (os.path.isabs(path) and os.path.isfile(path)):
                    raise ValueError("NpuOptimizer: %s must be an existing absolute path, got %r" % (key, path))
        if "auto_tune_mode" in options:
            modes = options["auto_tune_mode"].s.decode().split(",")
            if not set(modes) <= set(AUTO_TUNE_MODES):
                raise ValueError("NpuOptimizer: auto_tune_mode %r: use RL, GA or RL,GA" % ",".join(modes))


def record(call, **kwargs):
    CALLS.append((call, kwargs))


def calls(name):
    """kwargs of every recorded call named `name`, oldest first."""
    return [kwargs for call, kwargs in CALLS if call == name]


def names():
    return [call for call, _ in CALLS]


def session_configs():
    """The config passed to each tf.Session created since the last clear() (None when omitted)."""
    return [kwargs["config"] for kwargs in calls("Session")]


def loop_runs():
    """Steps run by each sess.run of an IterationOp."""
    return [kwargs["iterations"] for kwargs in calls("loop_run")]


def clear():
    del CALLS[:]


def _loop_iterations(sess, fetches):
    """N when `fetches` include an IterationOp of the session's graph, else None."""
    loop_ops = sess.graph.get_collection(LOOP_OPS_COLLECTION)
    if not loop_ops:
        return None
    for fetch in nest.flatten(fetches):
        if isinstance(fetch, str):
            fetch = sess.graph.as_graph_element(fetch)
        if any(fetch is op for op in loop_ops):
            # The device reads the loop count from the variable set_iteration_per_loop loaded.
            loop_var = sess.graph.get_collection(ITERATIONS_VAR_COLLECTION)[0]
            return int(_ORIGINAL["run"](sess, loop_var)) + 1
    return None


def _patched_init(self, target="", graph=None, config=None):
    check_npu_options(config)
    record("Session", config=config)
    _ORIGINAL["init"](self, target, graph, config)


def _patched_run(self, fetches, feed_dict=None, options=None, run_metadata=None):
    iterations = _loop_iterations(self, fetches)
    if iterations is None:
        return _ORIGINAL["run"](self, fetches, feed_dict, options, run_metadata)
    record("loop_run", iterations=iterations)
    for _ in range(iterations):
        result = _ORIGINAL["run"](self, fetches, feed_dict, options, run_metadata)
    return result


def _encode(value):
    """JSON for a recorded value: plain values and lists of them as they are, protobufs as base64,
    anything else as its type name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if hasattr(value, "SerializeToString"):
        return {"proto": base64.b64encode(value.SerializeToString()).decode("ascii")}
    return {"type": type(value).__name__}


def dump(path):
    """Writes CALLS to `path` as [[name, {key: value}], ...]."""
    with open(path, "w") as handle:
        json.dump([[name, {k: _encode(v) for k, v in kwargs.items()}] for name, kwargs in CALLS], handle)


def dump_at_exit_if_asked():
    """With NPU_DOUBLE_CALLS_DIR: records this process and its rank variables, and dumps CALLS at exit."""
    folder = os.environ.get("NPU_DOUBLE_CALLS_DIR")
    if folder:
        record("environment", pid=os.getpid(),
               **{name: os.environ.get(name) for name in ("RANK_ID", "RANK_SIZE", "ASCEND_DEVICE_ID", "JOB_ID",
                                                          "RANK_TABLE_FILE")})
        atexit.register(dump, os.path.join(folder, "calls_rank%s.json" % (os.environ.get("RANK_ID") or "0")))


def install():
    """Patches tf.Session (and InteractiveSession) once per process."""
    if _ORIGINAL:
        return
    _ORIGINAL["init"] = _session.BaseSession.__init__
    _ORIGINAL["run"] = _session.BaseSession.run
    _session.BaseSession.__init__ = _patched_init
    _session.BaseSession.run = _patched_run


def uninstall():
    """Restores tf.Session so later tests see stock TensorFlow."""
    if not _ORIGINAL:
        return
    _session.BaseSession.__init__ = _ORIGINAL.pop("init")
    _session.BaseSession.run = _ORIGINAL.pop("run")
