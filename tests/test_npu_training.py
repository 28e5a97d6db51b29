"""train.py and test.py end to end on the NPU path (through the npu_bridge double) and off it.

Each run is a subprocess, as users start it; with the double, a small runner executes the script
as __main__ and dumps what the double recorded (npu_bridge._recorder.CALLS) to JSON at exit.
"""
import base64
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from conftest import DEMO_DATA, NPU_DOUBLE_DIR, REPO_ROOT

SMALL_RUN = ["--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_WEIGHTS_PATH=", "--image_size=32", "--batch_size=8"]

# Runs argv[2:] as __main__ with the double imported; at exit writes the recorded calls to argv[1]
# (npu_bridge._recorder.dump: protobufs as base64, plain values as they are, other objects as their type name).
RUNNER = """
import atexit, runpy, sys
from npu_bridge import _recorder

atexit.register(_recorder.dump, sys.argv[1])
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class Run(object):
    """One finished process: returncode, stdout, stderr and (with the double) its recorded calls."""

    def __init__(self, result, calls):
        self.returncode, self.stdout, self.stderr = result.returncode, result.stdout, result.stderr
        self.calls = calls

    def called(self, name):
        return [kwargs for call, kwargs in self.calls if call == name]

    def names(self):
        return [call for call, _ in self.calls]

    def session_configs(self):
        configs = []
        for kwargs in self.called("Session"):
            configs.append(tf.ConfigProto.FromString(base64.b64decode(kwargs["config"]["proto"])))
        return configs


def _env(with_double):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([NPU_DOUBLE_DIR, REPO_ROOT] if with_double else [REPO_ROOT]))
    env.pop("RANK_SIZE", None)
    env.pop("RANK_ID", None)
    return env


def run_script(script, args, tmp_dir=None, with_double=False):
    """Runs `python script args` from the repo root; with the double when tmp_dir is given for the dump."""
    if with_double:
        dump = os.path.join(str(tmp_dir), "calls.json")
        command = [sys.executable, "-c", RUNNER, dump, script] + args
    else:
        command = [sys.executable, script] + args
    result = subprocess.run(command, cwd=REPO_ROOT, env=_env(with_double), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    calls = None
    if with_double:
        with open(dump) as handle:
            calls = json.load(handle)
    return Run(result, calls)


def train_args(tmp_dir, *extra):
    return SMALL_RUN + ["--TMP_MODEL_PATH=%s" % os.path.join(str(tmp_dir), "model"),
                        "--TMP_LOG_PATH=%s" % os.path.join(str(tmp_dir), "log")] + list(extra)


def npu_options(config):
    (custom,) = [op for op in config.graph_options.rewrite_options.custom_optimizers if op.name == "NpuOptimizer"]
    return custom.parameter_map


def checkpoint_steps(model_dir):
    """global_step stored in each checkpoint that the folder's checkpoint state lists, oldest first."""
    state = tf.train.get_checkpoint_state(model_dir)
    assert state is not None, os.listdir(model_dir)
    return [int(tf.train.load_variable(path, "global_step")) for path in state.all_model_checkpoint_paths]


def _ok(run):
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def npu_train(tmp_path_factory):
    """6 steps in loops of 3 with the default precision and loss scaling; shared by several tests."""
    tmp_dir = tmp_path_factory.mktemp("npu_train")
    run = _ok(run_script("train.py", train_args(tmp_dir, "--device=npu", "--max_steps=6", "--iterations_per_loop=3",
                                                "--log_every_n_steps=3", "--save_checkpoints_steps=3"),
                         tmp_dir, with_double=True))
    run.model_dir = os.path.join(str(tmp_dir), "model")
    return run


def test_npu_training_session_config(npu_train):
    assert "device: device=npu precision=allow_mix_precision iterations_per_loop=3 rank=0/1 mode=train" \
        in npu_train.stderr
    (config,) = npu_train.session_configs()
    options = npu_options(config)
    assert options["use_off_line"].b
    assert options["precision_mode"].s == b"allow_mix_precision"
    assert options["iterations_per_loop"].i == 3
    assert options["enable_data_pre_proc"].b
    rewrite_options = config.graph_options.rewrite_options
    assert rewrite_options.remapping == RewriterConfig.OFF
    assert rewrite_options.memory_optimization == RewriterConfig.OFF


def test_npu_training_wraps_the_optimizer_for_loss_scaling(npu_train):
    (distributed,) = npu_train.called("NPUDistributedOptimizer")
    assert distributed["optimizer"] == {"type": "MomentumOptimizer"}
    (manager,) = npu_train.called("ExponentialUpdateLossScaleManager")
    assert (manager["init_loss_scale"], manager["incr_every_n_steps"]) == (1024.0, 1000)
    assert (manager["decr_every_n_nan_or_inf"], manager["decr_ratio"]) == (2, 0.5)
    (scaled,) = npu_train.called("NPULossScaleOptimizer")
    assert scaled["opt"] == {"type": "NPUDistributedOptimizer"}
    assert scaled["loss_scale_manager"] == {"type": "ExponentialUpdateLossScaleManager"}
    assert scaled["is_distributed"] is False
    assert not npu_train.called("FixedLossScaleManager") and not npu_train.called("allreduce")
    names = npu_train.names()
    assert names.index("NPUDistributedOptimizer") < names.index("NPULossScaleOptimizer")


def test_npu_training_dropout_goes_through_npu_ops(npu_train):
    (dropout,) = npu_train.called("dropout")
    assert dropout["keep_prob"] == pytest.approx(1 - 0.2)


def test_npu_training_runs_loops_of_iterations_per_loop_steps(npu_train):
    (loop,) = npu_train.called("set_iteration_per_loop")
    assert loop["iterations_per_loop"] == 3
    names = npu_train.names()
    assert names.index("Session") < names.index("set_iteration_per_loop") < names.index("loop_run")
    # 6 steps in two session.runs of the loop op, global_step +3 each: checkpoints at 3 and 6.
    assert [kwargs["iterations"] for kwargs in npu_train.called("loop_run")] == [3, 3]
    assert checkpoint_steps(npu_train.model_dir) == [3, 6]
    assert " step 3/6 loss " in npu_train.stderr and " step 6/6 loss " in npu_train.stderr
    assert "done: 6 steps" in npu_train.stderr
    assert "Final Train Accuracy : " in npu_train.stdout


def test_npu_training_fixed_loss_scale_and_loop_rounding(tmp_path):
    run = _ok(run_script("train.py", train_args(tmp_path, "--device=npu", "--precision_mode=force_fp16",
                                                "--loss_scale_manager=fixed", "--fixed_loss_scale=256",
                                                "--max_steps=3", "--iterations_per_loop=2",
                                                "--save_checkpoints_steps=0"),
                         tmp_path, with_double=True))
    (config,) = run.session_configs()
    assert npu_options(config)["precision_mode"].s == b"force_fp16"
    assert npu_options(config)["iterations_per_loop"].i == 2
    (manager,) = run.called("FixedLossScaleManager")
    assert manager["loss_scale"] == 256.0
    assert not run.called("ExponentialUpdateLossScaleManager")
    (scaled,) = run.called("NPULossScaleOptimizer")
    assert scaled["loss_scale_manager"] == {"type": "FixedLossScaleManager"}
    assert scaled["opt"] == {"type": "NPUDistributedOptimizer"}
    # --max_steps=3 is rounded up to whole loops: 2 runs of 2 steps, one checkpoint at the end.
    assert "total training steps: rounded 3 up to 4" in run.stderr
    assert [kwargs["iterations"] for kwargs in run.called("loop_run")] == [2, 2]
    assert checkpoint_steps(os.path.join(str(tmp_path), "model")) == [4]


def test_npu_evaluation_has_no_dropout_and_no_loop(npu_train, tmp_path):
    run = _ok(run_script("test.py", ["--device=npu", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--batch_size=64",
                                     "--iterations_per_loop=3", "--TMP_MODEL_PATH=%s" % npu_train.model_dir],
                         tmp_path, with_double=True))
    assert "device: device=npu precision=allow_mix_precision iterations_per_loop=1 rank=0/1 mode=eval" in run.stderr
    (config,) = run.session_configs()
    options = npu_options(config)
    assert options["use_off_line"].b and options["precision_mode"].s == b"allow_mix_precision"
    assert "iterations_per_loop" not in options and "enable_data_pre_proc" not in options
    rewrite_options = config.graph_options.rewrite_options
    assert (rewrite_options.remapping, rewrite_options.memory_optimization) == (RewriterConfig.OFF,
                                                                                RewriterConfig.OFF)
    for name in ("dropout", "set_iteration_per_loop", "loop_run", "NPUDistributedOptimizer",
                 "NPULossScaleOptimizer"):
        assert not run.called(name), name
    assert "model.ckpt-6" in run.stdout
    assert "Images evaluated: 359" in run.stdout
    (top1,) = [line for line in run.stdout.splitlines() if line.startswith("Top-1 acc: ")]
    assert 0.0 <= float(top1.split(": ")[1]) <= 1.0


# ---------------------------------------------------------------- without npu_bridge

needs_no_bridge = pytest.mark.skipif(importlib.util.find_spec("npu_bridge") is not None,
                                     reason="a real npu_bridge is installed")


@needs_no_bridge
def test_auto_trains_on_cpu_without_the_bridge(tmp_path):
    run = _ok(run_script("train.py", train_args(tmp_path, "--device=auto", "--max_steps=2", "--log_every_n_steps=1",
                                                "--iterations_per_loop=3")))
    assert "device: device=cpu precision=fp32 iterations_per_loop=1 rank=0/1 mode=train" in run.stderr
    assert "ignoring --iterations_per_loop on device cpu" in run.stderr
    assert " step 1/2 loss " in run.stderr and " step 2/2 loss " in run.stderr
    assert checkpoint_steps(os.path.join(str(tmp_path), "model")) == [2]


@needs_no_bridge
def test_npu_without_the_bridge_fails_with_one_clear_line(tmp_path):
    run = run_script("train.py", train_args(tmp_path, "--device=npu", "--max_steps=2"))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr[-3000:]
    assert "npu_bridge is not importable" in errors[0] and "--device=cpu/gpu" in errors[0]
    assert not os.path.exists(os.path.join(str(tmp_path), "model"))
