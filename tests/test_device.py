"""effnet/devices/device.py on cpu/gpu and, through the npu_bridge test double (tests/npu_double), on the NPU path."""
import importlib
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from conftest import device_flags
from effnet.devices import device

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NPU_DOUBLE_DIR = os.path.join(REPO_ROOT, "tests", "npu_double")
DeviceError = device.DeviceError


@pytest.fixture(autouse=True)
def single_rank(monkeypatch):
    monkeypatch.delenv("RANK_SIZE", raising=False)
    monkeypatch.delenv("RANK_ID", raising=False)


@pytest.fixture
def npu():
    """The double importable for one test; yields its recorder, then unpatches and forgets it."""
    sys.path.insert(0, NPU_DOUBLE_DIR)
    recorder = importlib.import_module("npu_bridge._recorder")
    recorder.clear()
    try:
        yield recorder
    finally:
        recorder.uninstall()
        for name in [name for name in sys.modules if name == "npu_bridge" or name.startswith("npu_bridge.")]:
            del sys.modules[name]
        sys.path.remove(NPU_DOUBLE_DIR)


def npu_options(config):
    (custom,) = [op for op in config.graph_options.rewrite_options.custom_optimizers if op.name == "NpuOptimizer"]
    return custom.parameter_map


# ---------------------------------------------------------------- without npu_bridge

def test_double_is_not_importable_by_default():
    assert importlib.util.find_spec("npu_bridge") is None


def test_npu_without_bridge_raises_with_the_fix():
    with pytest.raises(DeviceError) as error:
        device.resolve(device_flags(device="npu"))
    message = str(error.value)
    assert message.startswith("npu_bridge is not importable")
    assert "set_env.sh" in message and "--device=cpu/gpu" in message
    assert isinstance(error.value, ValueError)



def test_auto_without_bridge_picks_gpu_or_cpu():
    dev = device.resolve(device_flags(iterations_per_loop=50))
    has_gpu = bool(tf.config.experimental.list_physical_devices("GPU"))
    assert dev.name == ("gpu" if has_gpu else "cpu")
    assert (dev.precision, dev.iterations_per_loop, dev.rank_size, dev.rank_id) == ("fp32", 1, 1, 0)
    assert dev.shard_info() == (1, 0)
    assert dev.round_to_loop(37, "log_every") == 37


def test_cpu_device_changes_nothing():
    dev = device.resolve(device_flags(device="cpu", intra_op_threads=3, inter_op_threads=2))
    config = dev.session_config()
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 2)
    assert not config.graph_options.rewrite_options.custom_optimizers
    optimizer = tf.train.GradientDescentOptimizer(0.1)
    assert dev.wrap_optimizer(optimizer) is optimizer
    with tf.Graph().as_default():
        x = tf.ones([64, 8])
        dropout = dev.dropout_fn()
        assert dropout(x, 0.5, False) is x
        dropped = dropout(x, 0.5, True)
        assert dropped is not x
        with tf.Session() as sess:
            values = sess.run(dropped)
    assert set(np.unique(values)) == {0.0, 2.0}
    assert "device=cpu precision=fp32 iterations_per_loop=1 rank=0/1 mode=train" == dev.describe()


def test_gpu_config_and_mixed_precision_wrapper():
    dev = device.for_name("gpu", device_flags(gpu_amp=True, xla=True, loss_scale_incr_every_n_steps=500))
    assert dev.precision == "mixed"
    config = dev.session_config()
    assert config.gpu_options.allow_growth
    assert config.graph_options.rewrite_options.auto_mixed_precision == RewriterConfig.ON
    assert config.graph_options.optimizer_options.global_jit_level == tf.OptimizerOptions.ON_1
    with tf.Graph().as_default():
        try:
            wrapped = dev.wrap_optimizer(tf.train.GradientDescentOptimizer(0.1))
        finally:
            tf.train.experimental.disable_mixed_precision_graph_rewrite()
    assert type(wrapped).__name__ == "MixedPrecisionLossScaleOptimizer"
    assert wrapped._loss_scale.increment_period == 500  # pylint: disable=protected-access
    plain = device.for_name("gpu", device_flags())
    assert plain.precision == "fp32"
    assert plain.session_config().graph_options.rewrite_options.auto_mixed_precision == 0


def test_rank_environment_is_checked(monkeypatch):
    monkeypatch.setenv("RANK_SIZE", "8")
    monkeypatch.setenv("RANK_ID", "ascend8p")
    with pytest.raises(DeviceError, match="must be integers"):
        device.resolve(device_flags(device="cpu"))
    monkeypatch.setenv("RANK_ID", "8")
    with pytest.raises(DeviceError, match="outside 0..RANK_SIZE-1"):
        device.resolve(device_flags(device="cpu"))
    monkeypatch.setenv("RANK_ID", "3")
    with pytest.raises(DeviceError, match="on GPU/CPU several processes train under Horovod") as error:
        device.resolve(device_flags(device="cpu"))
    assert "train_8p.sh --device=cpu" in str(error.value) and "horovodrun -np 8" in str(error.value)
    # Evaluation is one process whatever the environment says.
    dev = device.resolve(device_flags(device="cpu"), training=False)
    assert (dev.rank_size, dev.rank_id, dev.is_chief) == (1, 0, True)
    assert dev.broadcast_variables_op([]) is None and dev.average_over_ranks_op([]) is None


# ---------------------------------------------------------------- NPU path through the double

def test_auto_picks_npu_with_the_double(npu):
    dev = device.resolve(device_flags())
    assert (dev.name, dev.precision, dev.iterations_per_loop) == ("npu", "allow_mix_precision", 100)
    assert dev.describe() == "device=npu precision=allow_mix_precision iterations_per_loop=100 rank=0/1 mode=train"
    evaluation = device.resolve(device_flags(iterations_per_loop=20), training=False)
    assert evaluation.iterations_per_loop == 1
    assert "iterations_per_loop" not in npu_options(evaluation.session_config())


def test_npu_session_config(npu):
    config = device.resolve(device_flags(device="npu", iterations_per_loop=20)).session_config()
    options = npu_options(config)
    assert options["use_off_line"].b
    assert options["precision_mode"].s == b"allow_mix_precision"
    assert options["iterations_per_loop"].i == 20 and options["enable_data_pre_proc"].b
    rewrite_options = config.graph_options.rewrite_options
    assert rewrite_options.remapping == RewriterConfig.OFF
    assert rewrite_options.memory_optimization == RewriterConfig.OFF
    assert config.allow_soft_placement
    for absent in ("enable_dump", "enable_dump_debug", "dump_path", "profiling_mode", "modify_mixlist",
                   "hcom_parallel"):
        assert absent not in options

    single = npu_options(device.resolve(device_flags(device="npu", iterations_per_loop=1,
                                                   precision_mode="force_fp16")).session_config())
    assert single["precision_mode"].s == b"force_fp16"
    assert "iterations_per_loop" not in single and "enable_data_pre_proc" not in single


def test_npu_dump_profiling_and_mixlist_options(npu, tmp_path, monkeypatch):
    mixlist = tmp_path / "mixlist.json"
    mixlist.write_text(json.dumps({"white-list": {"to-add": ["ReduceMeanD"]}}))
    monkeypatch.chdir(tmp_path)
    flags_obj = device_flags(device="npu", modify_mixlist="mixlist.json", over_dump=True, over_dump_path="dump",
                           data_dump_flag=True, data_dump_path="dump", data_dump_step="0|5|10-12",
                           profiling=True, profiling_dump_path="prof")
    options = npu_options(device.resolve(flags_obj).session_config())
    dump_dir = str(tmp_path / "dump")
    assert options["modify_mixlist"].s.decode() == str(mixlist)
    assert options["enable_dump_debug"].b and options["dump_debug_mode"].s == b"all"
    assert options["enable_dump"].b and options["dump_mode"].s == b"all"
    assert options["dump_path"].s.decode() == dump_dir and os.path.isdir(dump_dir)
    assert options["dump_step"].s == b"0|5|10-12"
    assert options["profiling_mode"].b
    assert json.loads(options["profiling_options"].s.decode()) == {"output": str(tmp_path / "prof"),
                                                                  "task_trace": "on"}


def test_npu_fusion_switch_mixlist_and_auto_tune_reach_the_session(npu, tmp_path, monkeypatch):
    """The shipped configs/ files, given relative to the working directory, reach the adapter as absolute
    paths; the double's Session accepts the options (known keys, types, existing absolute files)."""
    monkeypatch.chdir(REPO_ROOT)
    flags_obj = device_flags(device="npu", modify_mixlist="configs/ops_info.json",
                             fusion_switch_file="configs/fusion_switch.cfg", auto_tune=True)
    config = device.resolve(flags_obj).session_config()
    with tf.Graph().as_default(), tf.Session(config=config):
        pass
    (recorded,) = npu.session_configs()
    options = npu_options(recorded)
    assert options["modify_mixlist"].s.decode() == os.path.join(REPO_ROOT, "configs", "ops_info.json")
    assert options["fusion_switch_file"].s.decode() == os.path.join(REPO_ROOT, "configs", "fusion_switch.cfg")
    assert options["auto_tune_mode"].s == b"RL,GA"
    plain = npu_options(device.resolve(device_flags(device="npu")).session_config())
    assert not {"modify_mixlist", "fusion_switch_file", "auto_tune_mode"} & set(plain)


def test_shipped_configs_have_the_adapter_shapes():
    with open(os.path.join(REPO_ROOT, "configs", "ops_info.json")) as f:
        mixlist = json.load(f)
    assert mixlist == {"black-list": {"to-add": ["Mul", "Cast"]},
                       "white-list": {"to-add": ["ReduceMean", "ReduceMeanD"]}}
    with open(os.path.join(REPO_ROOT, "configs", "fusion_switch.cfg")) as f:
        switch = json.load(f)["Switch"]
    assert switch["GraphFusion"] == {"ConvToFullyConnectionFusionPass": "off"} and switch["UBFusion"] == {}


@pytest.mark.parametrize("device_name", ["npu", "cpu"])
@pytest.mark.parametrize("name", ["modify_mixlist", "fusion_switch_file"])
def test_missing_npu_file_is_an_error_on_every_device(npu, tmp_path, monkeypatch, device_name, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeviceError) as error:
        device.resolve(device_flags(device=device_name, **{name: "missing.cfg"}))
    assert str(error.value).startswith("--%s file not found: missing.cfg (resolved from %s)" % (name, tmp_path))


@pytest.mark.parametrize("key, value, message", [
    ("fusion_switch_file", b"configs/fusion_switch.cfg", "existing absolute path"),
    ("auto_tune_mode", b"RL,XX", "use RL, GA"),
    ("auto_tune", b"RL,GA", "unknown option"),
])
def test_double_rejects_what_the_adapter_would_not_take(npu, key, value, message):
    config = tf.ConfigProto()
    custom = config.graph_options.rewrite_options.custom_optimizers.add()
    custom.name = "NpuOptimizer"
    custom.parameter_map[key].s = value
    with tf.Graph().as_default(), pytest.raises(ValueError, match=message):
        tf.Session(config=config)
    custom.parameter_map.clear()
    custom.parameter_map["use_off_line"].i = 1
    with tf.Graph().as_default(), pytest.raises(ValueError, match="must be of type b"):
        tf.Session(config=config)


@pytest.mark.parametrize("overrides, message", [
    (dict(modify_mixlist="mixlist.json", precision_mode="force_fp32"), "allow_mix_precision"),
    (dict(over_dump=True), "--over_dump needs --over_dump_path"),
    (dict(over_dump=True, over_dump_path="a", data_dump_flag=True, data_dump_path="b"), "same directory"),
    (dict(data_dump_flag=True, data_dump_path="d", data_dump_step="5,10"), "data_dump_step"),
    (dict(iterations_per_loop=0), "positive"),
    (dict(loss_scale_manager="fixed", fixed_loss_scale=0.5), "fixed_loss_scale"),
])
def test_npu_flag_errors(npu, tmp_path, monkeypatch, overrides, message):
    (tmp_path / "mixlist.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeviceError, match=message):
        device.resolve(device_flags(device="npu", **overrides))


def test_npu_wrapper_order_and_managers(npu, monkeypatch, tmp_path):
    monkeypatch.setenv("RANK_TABLE_FILE", str(tmp_path / "rank_table.json"))
    (tmp_path / "rank_table.json").write_text("{}")
    with tf.Graph().as_default():
        base = tf.train.RMSPropOptimizer(0.1)
        wrapped = device.resolve(device_flags()).wrap_optimizer(base)
        from npu_bridge.npu_init import (
            ExponentialUpdateLossScaleManager,
            FixedLossScaleManager,
            NPUDistributedOptimizer,
            NPULossScaleOptimizer,
        )
        assert isinstance(wrapped, NPULossScaleOptimizer)
        assert isinstance(wrapped._opt, NPUDistributedOptimizer) and wrapped._opt._optimizer is base
        assert isinstance(wrapped._loss_scale_manager, ExponentialUpdateLossScaleManager)
        assert npu.names() == ["NPUDistributedOptimizer", "ExponentialUpdateLossScaleManager",
                               "NPULossScaleOptimizer"]
        (manager,) = npu.calls("ExponentialUpdateLossScaleManager")
        assert (manager["init_loss_scale"], manager["incr_every_n_steps"], manager["decr_every_n_nan_or_inf"],
                manager["decr_ratio"]) == (1024.0, 1000, 2, 0.5)
        assert npu.calls("NPULossScaleOptimizer")[0]["is_distributed"] is False

        monkeypatch.setenv("RANK_SIZE", "8")
        monkeypatch.setenv("RANK_ID", "3")
        npu.clear()
        dev = device.resolve(device_flags(loss_scale_manager="fixed", fixed_loss_scale=512))
        assert dev.shard_info() == (8, 3) and not dev.is_chief
        assert dev.describe().endswith("rank=3/8 mode=train collective=hccl")
        assert npu_options(dev.session_config())["hcom_parallel"].b
        wrapped = dev.wrap_optimizer(base)
        assert isinstance(wrapped._loss_scale_manager, FixedLossScaleManager)
        assert npu.calls("FixedLossScaleManager")[0]["loss_scale"] == 512
        assert npu.calls("NPULossScaleOptimizer")[0]["is_distributed"] is True

        npu.clear()
        unscaled = device.resolve(device_flags(precision_mode="force_fp32")).wrap_optimizer(base)
        assert isinstance(unscaled, NPUDistributedOptimizer)
        assert npu.names() == ["NPUDistributedOptimizer"]


def test_npu_dropout_only_in_training(npu):
    dropout = device.resolve(device_flags()).dropout_fn()
    with tf.Graph().as_default():
        x = tf.ones([4, 8])
        assert dropout(x, 0.2, False) is x
        assert dropout(x, 0.0, True) is x
        assert npu.calls("dropout") == []
        out = dropout(x, 0.2, True)
        assert out is not x
    (call,) = npu.calls("dropout")
    assert call["keep_prob"] == pytest.approx(0.8)


def test_npu_loop_runs_n_steps_per_session_run(npu):
    dev = device.resolve(device_flags(iterations_per_loop=5))
    with tf.Graph().as_default():
        global_step = tf.train.get_or_create_global_step()
        w = tf.Variable(0.0)
        loss = tf.square(w - 3.0)
        optimizer = dev.wrap_optimizer(tf.train.GradientDescentOptimizer(0.1))
        train_op = optimizer.minimize(loss, global_step=global_step)
        config = dev.session_config()
        with tf.Session(config=config) as sess:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            loop_op = dev.finalize_train_op(sess, train_op)
            assert loop_op.name == "IterationOp"
            sess.run(loop_op)
            sess.run(loop_op)
            steps, weight = sess.run([global_step, w])
    assert npu.session_configs()[-1] is config
    assert npu.calls("set_iteration_per_loop")[0]["iterations_per_loop"] == 5
    assert npu.loop_runs() == [5, 5]
    assert steps == 10
    # Plain gradient descent on (w - 3)^2: the loss scale must cancel out exactly.
    assert weight == pytest.approx(3.0 * (1 - 0.8 ** 10), rel=1e-6)


def test_npu_loss_scaling_skips_non_finite_steps(npu):
    dev = device.resolve(device_flags(iterations_per_loop=1))
    with tf.Graph().as_default():
        global_step = tf.train.get_or_create_global_step()
        w = tf.Variable(1.0)
        target = tf.placeholder(tf.float32, [])
        optimizer = dev.wrap_optimizer(tf.train.GradientDescentOptimizer(0.1))
        train_op = optimizer.minimize(tf.square(w - target), global_step=global_step)
        scale = optimizer._loss_scale_manager.get_loss_scale()
        with tf.Session(config=dev.session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            assert dev.finalize_train_op(sess, train_op) is train_op
            for _ in range(2):
                sess.run(train_op, {target: np.inf})
            assert sess.run([global_step, w, scale]) == [0, 1.0, 512.0]
            sess.run(train_op, {target: 0.0})
            assert sess.run(global_step) == 1
    assert npu.loop_runs() == []


def test_round_to_loop_logs_when_it_rounds(npu, caplog):
    dev = device.resolve(device_flags(iterations_per_loop=100))
    caplog.set_level(logging.INFO)
    assert dev.round_to_loop(300, "save_checkpoints_steps") == 300
    assert "rounded" not in caplog.text
    assert dev.round_to_loop(250, "save_checkpoints_steps") == 300
    assert "save_checkpoints_steps: rounded 250 up to 300" in caplog.text
    assert dev.round_to_loop(0, "log_every") == 0


def test_subprocess_gets_the_double_through_pythonpath():
    script = ("import sys; from absl import flags; from effnet.devices import device; device.define_flags(); "
              "flags.FLAGS(sys.argv); d = device.resolve(); print(d.name, d.precision, d.iterations_per_loop)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([NPU_DOUBLE_DIR, REPO_ROOT]))
    env.pop("RANK_SIZE", None)
    result = subprocess.run([sys.executable, "-c", script, "--iterations_per_loop=3", "--precision_mode=force_fp16"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["npu", "force_fp16", "3"]
    bad = subprocess.run([sys.executable, "-c", script, "--precision_mode=fp8"], cwd=REPO_ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    assert bad.returncode != 0 and "precision_mode" in bad.stderr and "allow_mix_precision" in bad.stderr


def test_npu_ranks_need_a_rank_table_file(npu, monkeypatch, tmp_path):
    monkeypatch.setenv("RANK_SIZE", "2")
    monkeypatch.setenv("RANK_ID", "1")
    monkeypatch.setenv("RANK_TABLE_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(DeviceError, match="needs RANK_TABLE_FILE") as error:
        device.resolve(device_flags(device="npu"))
    assert "make_rank_table.py" in str(error.value)


def test_npu_collectives_broadcast_and_average_through_hccl_ops(npu, monkeypatch, tmp_path):
    """Rank 1 of 2: the broadcast assigns rank 0's values (here the double's, its own) to every variable,
    and the average runs after the caller's control dependencies, in one all-reduce."""
    (tmp_path / "rank_table.json").write_text("{}")
    monkeypatch.setenv("RANK_TABLE_FILE", str(tmp_path / "rank_table.json"))
    monkeypatch.setenv("RANK_SIZE", "2")
    monkeypatch.setenv("RANK_ID", "1")
    dev = device.resolve(device_flags(device="npu"))
    with tf.Graph().as_default():
        a = tf.Variable([[1.0, 2.0], [3.0, 4.0]], name="a")
        b = tf.Variable(5.0, name="b")
        step = tf.Variable(7, dtype=tf.int64, name="step")
        broadcast = dev.broadcast_variables_op([a, b, step])
        bump = tf.assign_add(b, 1.0)
        with tf.control_dependencies([bump]):
            average = dev.average_over_ranks_op([a, b])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(broadcast)
            sess.run(average)
            values = sess.run([a, b, step])
    (call,) = npu.calls("broadcast")
    assert call["root_rank"] == 0
    assert call["tensors"] == ["broadcast_from_rank0/a:0", "broadcast_from_rank0/b:0", "broadcast_from_rank0/step:0"]
    assert npu.calls("broadcast_run") == [{"count": 3, "root_rank": 0}]
    (allreduce,) = npu.calls("hccl_allreduce")
    assert (allreduce["reduction"], allreduce["shape"]) == ("sum", [5])
    # The double's sum over 2 identical ranks divided by 2: the values themselves; b saw the bump first.
    np.testing.assert_allclose(values[0], [[1.0, 2.0], [3.0, 4.0]])
    assert values[1] == 6.0 and values[2] == 7
