"""Data-parallel training with two processes on this CPU.

Ascend path: train_8p.sh and test/train_performance_8p.sh start two ranks through the npu_bridge
double (tests/npu_double), which records what each rank asked HCCL to do. GPU/CPU path: two
processes under Horovod (Gloo): identical variables on both ranks, resume after SIGKILL, and the
same result as one process over the same global batch. Horovod must be installed
(bash scripts/install_horovod.sh); without it these tests fail, they are not skipped.
"""
import base64
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from conftest import DEMO_DATA, NPU_DOUBLE_DIR, REPO_ROOT, listed_checkpoint_steps, read_case_log
from effnet.checkpoints import checkpoint_reader

SMALL = ["--image_size=32", "--batch_size=4", "--TMP_WEIGHTS_PATH="]
INSTALL_HINT = "bash scripts/install_horovod.sh"

# Runs argv[2:] as __main__ and records, in folder argv[1], this rank's pid at start, which files it
# wrote (checkpoints, summaries, run_config.json) and the value of every global variable when the
# input iterator is initialized (after the broadcast, before the first step: variables_start_rank<r>)
# and when its training session ends without an error (variables_rank<r>).
RUNNER = r'''
import json, os, runpy, sys
import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.python.client import session
from effnet.checkpoints import run_config

out_dir, rank = sys.argv[1], os.environ.get("HOROVOD_RANK", "0")
with open(os.path.join(out_dir, "pid_rank%s" % rank), "w") as handle:
    handle.write(str(os.getpid()))
writes = []

def spy(owner, name, what):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        writes.append(what)
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)

spy(tf.train.Saver, "save", "checkpoint")
spy(tf.summary.FileWriter, "__init__", "summaries")
spy(run_config, "write", "run_config")
exit_session = session.Session.__exit__

def dump_and_exit(self, error_type, error, trace):
    variables = self.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
    if error_type is None and variables:
        values = self.run(variables)
        np.savez(os.path.join(out_dir, "variables_rank%s.npz" % rank),
                 **{v.op.name: value for v, value in zip(variables, values)})
    with open(os.path.join(out_dir, "writes_rank%s.json" % rank), "w") as handle:
        json.dump(writes, handle)
    return exit_session(self, error_type, error, trace)

session.Session.__exit__ = dump_and_exit
run_session = session.Session.run

def run_and_dump_start(self, fetches, *args, **kwargs):
    path = os.path.join(out_dir, "variables_start_rank%s.npz" % rank)
    if getattr(fetches, "type", None) == "MakeIterator" and not os.path.exists(path):
        variables = self.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
        values = run_session(self, variables)
        np.savez(path, **{v.op.name: value for v, value in zip(variables, values)})
    return run_session(self, fetches, *args, **kwargs)

session.Session.run = run_and_dump_start
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TMP_", "RANK_", "HOROVOD_", "OMPI_", "PMI_")) and k not in ("PYTHONPATH",)}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT, EFFICIENTNET_FORCE_VENV="1")
    env.update(extra)
    return env


def start(command, log_path, **env):
    """Starts `command` from the repo root in its own process group, output to log_path."""
    log = open(log_path, "w")
    return subprocess.Popen(command, cwd=REPO_ROOT, env=_env(**env), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(process, log_path, timeout=900):
    """(exit code, output) once `process` ends; its whole process group is killed on a timeout."""
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    with open(log_path) as handle:
        return code, handle.read()


def read(path):
    with open(path) as handle:
        return handle.read()


def rank_table(tmp_path, device_ids):
    """A one-server rank table for `device_ids`, written by scripts/make_rank_table.py."""
    path = str(tmp_path / "rank_table.json")
    ips = ",".join("192.168.%d.101" % (100 + i) for i in range(8))
    result = subprocess.run([sys.executable, "scripts/make_rank_table.py", "--device_ips=%s" % ips,
                             "--devices=%s" % ",".join(map(str, device_ids)), "--server_ip=10.0.0.1",
                             "--output=%s" % path], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr
    return path


def calls(folder, rank):
    with open(os.path.join(folder, "calls_rank%d.json" % rank)) as handle:
        return json.load(handle)


def called(recorded, name):
    return [kwargs for call, kwargs in recorded if call == name]


def npu_options(recorded):
    (session_call,) = called(recorded, "Session")
    config = tf.ConfigProto.FromString(base64.b64decode(session_call["config"]["proto"]))
    (custom,) = [op for op in config.graph_options.rewrite_options.custom_optimizers if op.name == "NpuOptimizer"]
    return custom.parameter_map


# ------------------------------------------------------------------ Ascend ranks through the double

@pytest.fixture(scope="module")
def npu_runs(tmp_path_factory):
    """train_8p.sh and test/train_performance_8p.sh at the same time, each with RANK_SIZE=2 on devices 4
    and 5 of a rank table, through the double: 4 steps in loops of 2, checkpoints at 2 and 4."""
    root = tmp_path_factory.mktemp("npu_8p")
    table = rank_table(root, [4, 5])
    double = dict(RANK_SIZE="2", RANK_TABLE_FILE=table, PYTHONPATH=os.pathsep.join([NPU_DOUBLE_DIR, REPO_ROOT]))
    launcher = {"dir": str(root / "train_8p"), "calls": str(root / "train_8p_calls")}
    os.makedirs(launcher["calls"])
    paths = {name: os.path.join(launcher["dir"], name) for name in ("model", "log", "weights")}
    os.makedirs(paths["weights"])
    train = start(["bash", "train_8p.sh", "--batch_size=4", "--max_steps=4", "--iterations_per_loop=2",
                   "--log_every_n_steps=2", "--save_checkpoints_steps=2", "--lr_schedule=constant"],
                  str(root / "train_8p.out"), NPU_DOUBLE_CALLS_DIR=launcher["calls"], TMP_DATA_PATH=DEMO_DATA,
                  TMP_MODEL_PATH=paths["model"], TMP_LOG_PATH=paths["log"], TMP_WEIGHTS_PATH=paths["weights"],
                  **double)
    perf = {"dir": str(root / "perf_8p"), "calls": str(root / "perf_8p_calls")}
    os.makedirs(perf["calls"])
    performance = start(["bash", "test/train_performance_8p.sh", "--data_path=%s" % DEMO_DATA, "--batch_size=4",
                         "--train_steps=4", "--output_path=%s" % perf["dir"]],
                        str(root / "perf_8p.out"), NPU_DOUBLE_CALLS_DIR=perf["calls"], **double)
    launcher["code"], launcher["output"] = finish(train, str(root / "train_8p.out"))
    perf["code"], perf["output"] = finish(performance, str(root / "perf_8p.out"))
    launcher.update(paths)
    return launcher, perf


def test_train_8p_starts_one_process_per_device_of_the_table(npu_runs):
    launcher, _ = npu_runs
    assert launcher["code"] == 0, launcher["output"][-3000:]
    logs = sorted(glob.glob(os.path.join(launcher["log"], "train_*_rank*.log")))
    assert [log[-9:] for log in logs] == ["rank0.log", "rank1.log"]
    environments = [called(calls(launcher["calls"], rank), "environment")[0] for rank in (0, 1)]
    assert [(e["RANK_ID"], e["ASCEND_DEVICE_ID"], e["RANK_SIZE"], e["JOB_ID"]) for e in environments] == [
        ("0", "4", "2", "10087"), ("1", "5", "2", "10087")]
    assert environments[0]["pid"] != environments[1]["pid"]
    for rank, log in enumerate(logs):
        text = read(log)
        assert "device=npu precision=allow_mix_precision iterations_per_loop=2 rank=%d/2 mode=train " \
               "collective=hccl" % rank in text
        assert "rank %d: every variable set to rank 0's (step 0)" % rank in text
        assert " step 4/4 loss " in text
        assert "batch 4 x 2 device(s)" in text
    # Rank 0 alone prints the final-result lines; the terminal follows its log.
    assert "Final Performance images/sec" in read(logs[0]) and "Final" not in read(logs[1])
    assert launcher["output"].count("Final Performance images/sec") == 1


def test_train_8p_ranks_broadcast_every_variable_and_average_gradients(npu_runs):
    launcher, _ = npu_runs
    model_dir = launcher["model"]
    saved = dict(tf.train.list_variables(os.path.join(model_dir, "model.ckpt-4")))
    statistics = [name for name in saved if re.search(r"moving_(mean|variance)$", name)
                  and "ExponentialMovingAverage" not in name]
    assert statistics and any("ExponentialMovingAverage" in name for name in saved)
    # The demo recipe trains with Adam; the NPU fp16 loss scale is a variable too.
    assert any(name.endswith("/Adam_1") for name in saved) and "global_step" in saved and "loss_scale" in saved
    for rank in (0, 1):
        recorded = calls(launcher["calls"], rank)
        names = [call for call, _ in recorded]
        (broadcast,) = called(recorded, "broadcast")
        assert broadcast["root_rank"] == 0
        # Every global variable - weights, batch-norm statistics, optimizer slots, EMA shadows, global
        # step, loss scale - is what a checkpoint holds.
        broadcast_names = {re.sub(r"^broadcast_from_rank0/(.*):0$", r"\1", name) for name in broadcast["tensors"]}
        assert broadcast_names == set(saved)
        # Broadcast once, after the session has initialized/restored the variables, before training.
        assert called(recorded, "broadcast_run") == [{"count": len(saved), "root_rank": 0}]
        assert names.index("Session") < names.index("broadcast_run") < names.index("loop_run")
        (optimizer,) = called(recorded, "NPUDistributedOptimizer")
        assert optimizer["optimizer"] == {"type": "AdamOptimizer"}
        assert called(recorded, "allreduce")[0]["rank_size"] == 2
        assert called(recorded, "NPULossScaleOptimizer")[0]["is_distributed"] is True
        # The batch-norm statistics are averaged over the ranks in one all-reduce per step.
        (averaged,) = called(recorded, "hccl_allreduce")
        assert averaged["reduction"] == "sum"
        assert averaged["shape"] == [sum(int(np.prod(saved[name])) for name in statistics)]
        assert npu_options(recorded)["hcom_parallel"].b
        assert [kwargs["iterations"] for kwargs in called(recorded, "loop_run")] == [2, 2]


def test_train_8p_rank_0_alone_writes(npu_runs):
    launcher, _ = npu_runs
    assert listed_checkpoint_steps(launcher["model"]) == [2, 4]
    assert os.path.isfile(os.path.join(launcher["model"], "run_config.json"))
    events = glob.glob(os.path.join(launcher["log"], "events.out.tfevents.*"))
    assert len(events) == 1
    assert not os.listdir(launcher["weights"])


def test_performance_8p_per_device_folders_and_result_from_rank_0(npu_runs):
    _, perf = npu_runs
    assert perf["code"] == 0, perf["output"][-3000:]
    assert sorted(os.listdir(perf["dir"])) == ["4", "5"]
    for device in ("4", "5"):
        assert os.path.isfile(os.path.join(perf["dir"], device, "train_%s.log" % device))
    rank0 = os.path.join(perf["dir"], "4")
    assert "rank=1/2" in read(os.path.join(perf["dir"], "5", "train_5.log"))
    assert listed_checkpoint_steps(os.path.join(rank0, "ckpt")) == [4]
    assert not os.path.exists(os.path.join(perf["dir"], "5", "ckpt"))
    assert perf["output"].count("------------------ Final result ------------------") == 1
    case = "EfficientNet_for_TensorFlow_bs4_2p_perf"
    result = read_case_log(os.path.join(rank0, case + ".log"))
    assert result["RankSize"] == "2" and result["BatchSize"] == "4" and result["CaseName"] == case
    fps = float(result["ActualFPS"])
    # TrainingTime is the time of one global step in ms: batch x ranks x 1000 / images per second.
    assert float(result["TrainingTime"]) == pytest.approx(4 * 2 * 1000 / fps, abs=0.005 + 1e-9)  # two decimals
    environments = [called(calls(perf["calls"], rank), "environment")[0] for rank in (0, 1)]
    assert [(e["RANK_ID"], e["ASCEND_DEVICE_ID"]) for e in environments] == [("0", "4"), ("1", "5")]


def _one_error_line(output):
    errors = [line for line in output.splitlines() if "error: " in line]
    assert len(errors) == 1, output[-3000:]
    assert "Traceback" not in output
    return errors[0]


@pytest.mark.parametrize("script, case, message", [
    ("train_8p.sh", "unset", "RANK_TABLE_FILE is not set"),
    ("train_8p.sh", "malformed", "has no server_list"),
    ("train_8p.sh", "too small", "RANK_SIZE=8 but rank table"),
    ("test/train_full_8p.sh", "missing", "not found"),
])
def test_a_missing_or_bad_rank_table_stops_before_any_process_starts(tmp_path, script, case, message):
    model_dir, log_dir, output = tmp_path / "model", tmp_path / "log", tmp_path / "output"
    env = dict(TMP_MODEL_PATH=str(model_dir), TMP_LOG_PATH=str(log_dir), TMP_DATA_PATH=DEMO_DATA,
               PYTHONPATH=os.pathsep.join([NPU_DOUBLE_DIR, REPO_ROOT]))
    if case == "malformed":
        env["RANK_TABLE_FILE"] = str(tmp_path / "malformed.json")
        (tmp_path / "malformed.json").write_text(
            '{"version": "1.0", "status": "completed", "server_count": "1", "server_list": []}')
    elif case == "too small":
        env.update(RANK_TABLE_FILE=rank_table(tmp_path, [0, 1]), RANK_SIZE="8")
    elif case == "missing":
        env["RANK_TABLE_FILE"] = str(tmp_path / "none.json")
    args = ["bash", script] + (["--data_path=%s" % DEMO_DATA, "--output_path=%s" % output]
                               if script.startswith("test/") else [])
    result = subprocess.run(args, cwd=REPO_ROOT, env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=600)
    assert result.returncode != 0
    line = _one_error_line(result.stdout)
    assert message in line and "make_rank_table.py" in line, line
    assert not model_dir.exists() and not log_dir.exists() and not output.exists()


# ------------------------------------------------------------------ GPU/CPU ranks under Horovod

@pytest.fixture(scope="module")
def horovod():
    """Fails (not skips) when Horovod is missing: the multi-process path must be tested."""
    result = subprocess.run([sys.executable, "-c", "import horovod.tensorflow"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    if result.returncode != 0:
        pytest.fail("horovod.tensorflow does not import in %s (%s): install it with `%s`"
                    % (sys.executable, result.stdout.strip().splitlines()[-1:], INSTALL_HINT))


def horovodrun(out_dir, args, log_path):
    """Starts 2 ranks of train.py under horovodrun --gloo on this machine, through RUNNER."""
    runner = os.path.join(out_dir, "runner.py")
    with open(runner, "w") as handle:
        handle.write(RUNNER)
    return start([sys.executable, "-m", "horovod.runner.launch", "--gloo", "-np", "2", "-H", "localhost:2",
                  sys.executable, runner, out_dir, "train.py"] + args, log_path)


def wait_for_checkpoint(model_dir, process, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ended = process.poll() is not None  # asked first: a run that ends after the listing wrote its checkpoint
        if listed_checkpoint_steps(model_dir):
            return
        assert not ended, "the run ended before writing a checkpoint"
        time.sleep(0.05)
    raise AssertionError("no checkpoint in %s after %ds" % (model_dir, timeout))


@pytest.fixture(scope="module")
def resumed(horovod, tmp_path_factory):
    """Two ranks from scratch (no seed: each rank draws its own initial weights), SIGKILLed after the first
    checkpoint, then started again to step 8: the second run's outputs."""
    root = tmp_path_factory.mktemp("horovod_resume")
    model_dir, log_dir = str(root / "model"), str(root / "log")
    args = SMALL + ["--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_dir, "--TMP_LOG_PATH=%s" % log_dir,
                    "--max_steps=8", "--save_checkpoints_steps=2", "--log_every_n_steps=1", "--optimizer=momentum",
                    "--learning_rate=0.05", "--moving_average_decay=0.99"]
    first = str(root / "first")
    os.makedirs(first)
    process = horovodrun(first, args, str(root / "first.out"))
    try:
        wait_for_checkpoint(model_dir, process)
        for rank in (0, 1):
            os.kill(int(read(os.path.join(first, "pid_rank%d" % rank))), signal.SIGKILL)
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # The newest intact checkpoint on disk, not the state file's: a kill between a save and its retention
    # leaves the state file one checkpoint behind, and the second run resumes from the newest.
    newest, _ = checkpoint_reader.newest_intact_checkpoint(model_dir)
    killed_at = checkpoint_reader.checkpoint_step(newest)
    assert killed_at < 8
    second = str(root / "second")
    os.makedirs(second)
    code, output = finish(horovodrun(second, args, str(root / "second.out")), str(root / "second.out"))
    assert code == 0, output[-3000:]
    return {"dir": second, "first": first, "output": output, "model": model_dir, "log": log_dir,
            "killed_at": killed_at}


def test_horovod_resume_after_sigkill_on_both_ranks(resumed):
    output, step = resumed["output"], resumed["killed_at"]
    latest = os.path.join(resumed["model"], "model.ckpt-%d" % step)
    for rank in (0, 1):
        rank_lines = "\n".join(line for line in output.splitlines() if line.startswith("[%d]" % rank))
        assert "resuming from %s (step %d)" % (latest, step) in rank_lines, output[-3000:]
        assert "rank %d: every variable set to rank 0's (step %d)" % (rank, step) in rank_lines
        assert "rank=%d/2 mode=train collective=horovod" % rank in rank_lines
        assert " step 8/8 loss " in rank_lines
    assert listed_checkpoint_steps(resumed["model"])[-1] == 8


def test_horovod_rank_0_alone_writes(resumed):
    assert json.loads(read(os.path.join(resumed["dir"], "writes_rank1.json"))) == []
    writes = json.loads(read(os.path.join(resumed["dir"], "writes_rank0.json")))
    assert writes[:2] == ["summaries", "run_config"] and "checkpoint" in writes
    assert len([line for line in resumed["output"].splitlines() if "Final Performance images/sec" in line]) == 1


def _identical(ranks):
    assert sorted(ranks[0].files) == sorted(ranks[1].files)
    different = [n for n in ranks[0].files if not np.array_equal(ranks[0][n], ranks[1][n])]
    assert not different, different[:10]


def test_horovod_ranks_start_from_rank_0_s_variables(resumed):
    """The first run starts from scratch without a seed: each rank initializes its own random weights,
    so only the broadcast makes them equal before the first step."""
    ranks = [np.load(os.path.join(resumed["first"], "variables_start_rank%d.npz" % rank)) for rank in (0, 1)]
    _identical(ranks)
    assert int(ranks[0]["global_step"]) == 0
    # After the resume, both start from the checkpoint.
    ranks = [np.load(os.path.join(resumed["dir"], "variables_start_rank%d.npz" % rank)) for rank in (0, 1)]
    _identical(ranks)
    assert int(ranks[0]["global_step"]) == resumed["killed_at"]


def test_horovod_ranks_hold_identical_variables(resumed):
    """Without the gradient all-reduce every weight would differ, without the averaging the batch-norm
    statistics (each rank sees its own shard): all of them, and the EMA shadows and optimizer slots,
    must be equal on both ranks after training."""
    ranks = [np.load(os.path.join(resumed["dir"], "variables_rank%d.npz" % rank)) for rank in (0, 1)]
    names = ranks[0].files
    kinds = {"moving statistics": [n for n in names
                                   if re.search(r"moving_(mean|variance)$", n) and "Exponential" not in n],
             "EMA shadows": [n for n in names if n.endswith("ExponentialMovingAverage")],
             "momentum slots": [n for n in names if n.endswith("/Momentum")],
             "global step": ["global_step"]}
    for kind, kind_names in kinds.items():
        assert kind_names, kind
    _identical(ranks)
    assert int(ranks[0]["global_step"]) == 8
    # The statistics did move away from their initial values (0 and 1) during training.
    means = [ranks[0][n] for n in kinds["moving statistics"] if n.endswith("moving_mean")]
    assert max(float(np.abs(m).max()) for m in means) > 1e-3
    # And the saved checkpoint is what both ranks hold.
    reader = tf.train.load_checkpoint(os.path.join(resumed["model"], "model.ckpt-8"))
    for name in kinds["moving statistics"][:5] + kinds["EMA shadows"][:5]:
        np.testing.assert_array_equal(reader.get_tensor(name), ranks[0][name])


def _small_dataset(folder):
    """8 training images: the first 4 of each demo shard, one shard per rank, so that every step of a
    2-rank run with batch 4 and of a 1-process run with batch 8 sees the same 8 images."""
    os.makedirs(folder)
    for shard in ("train-00000-of-00002", "train-00001-of-00002"):
        records = []
        for record in tf.io.tf_record_iterator(os.path.join(DEMO_DATA, shard)):
            records.append(record)
            if len(records) == 4:
                break
        with tf.io.TFRecordWriter(os.path.join(folder, shard)) as writer:
            for record in records:
                writer.write(record)
    info = json.loads(read(os.path.join(DEMO_DATA, "dataset_info.json")))
    info["num_examples"] = {"train": 8, "validation": 0}
    with open(os.path.join(folder, "dataset_info.json"), "w") as handle:
        json.dump(info, handle)
    shutil.copy(os.path.join(DEMO_DATA, "labels.txt"), folder)


HEAD = ("efficientnet-b0/head/dense/kernel", "efficientnet-b0/head/dense/bias")


@pytest.fixture(scope="module")
def equivalent_runs(horovod, fixture_dir, tmp_path_factory):
    """From the official fixture checkpoint (all 1000-class weights, so every run starts alike without
    a broadcast), 3 steps of the head - the rest frozen, batch norm in inference mode, no dropout,
    centre crops - with 2 ranks x 4 images (train_8p.sh --device=cpu) and, at the same time, with
    1 process x 8 images, at the same learning rate (it is the global batch's)."""
    root = tmp_path_factory.mktemp("horovod_equivalence")
    data = str(root / "data")
    _small_dataset(data)
    weights = os.path.join(fixture_dir, "ckpt", "model.ckpt-3")
    common = ["--image_size=32", "--num_classes=1000", "--freeze_base", "--dropout_rate=0", "--min_crop_area=1.0",
              "--norandom_flip", "--optimizer=sgd", "--learning_rate=0.01", "--max_steps=3",
              "--save_checkpoints_steps=0", "--log_every_n_steps=1", "--moving_average_decay=0.9"]
    two = {"model": str(root / "two" / "model"), "log": str(root / "two" / "log")}
    two_ranks = start(["bash", "train_8p.sh", "--device=cpu", "--batch_size=4"] + common, str(root / "two.out"),
                      RANK_SIZE="2", TMP_DATA_PATH=data, TMP_WEIGHTS_PATH=weights, TMP_MODEL_PATH=two["model"],
                      TMP_LOG_PATH=two["log"])
    one = {"model": str(root / "one" / "model")}
    one_process = start([sys.executable, "train.py", "--batch_size=8", "--TMP_DATA_PATH=%s" % data,
                         "--TMP_WEIGHTS_PATH=%s" % weights, "--TMP_MODEL_PATH=%s" % one["model"],
                         "--TMP_LOG_PATH=%s" % (root / "one" / "log")] + common, str(root / "one.out"))
    two["code"], two["output"] = finish(two_ranks, str(root / "two.out"))
    one["code"], one["output"] = finish(one_process, str(root / "one.out"))
    assert two["code"] == 0, two["output"][-3000:]
    assert one["code"] == 0, one["output"][-3000:]
    return two, one, weights


def test_two_ranks_equal_one_process_over_the_same_global_batch(equivalent_runs):
    """Tolerance 1e-5 (float32 sums in another order) against updates of more than 1e-3: with one rank's
    4 images alone (no all-reduce) the weights would differ by about the size of the update."""
    two, one, start_prefix = equivalent_runs
    start_values = tf.train.load_checkpoint(start_prefix)
    two_values = tf.train.load_checkpoint(os.path.join(two["model"], "model.ckpt-3"))
    one_values = tf.train.load_checkpoint(os.path.join(one["model"], "model.ckpt-3"))
    for name in HEAD + tuple(n + "/ExponentialMovingAverage" for n in HEAD):
        # The run started from the EMA weights (--weights_variant=auto).
        update = np.abs(one_values.get_tensor(name) - start_values.get_tensor(
            name.split("/Exponential")[0] + "/ExponentialMovingAverage")).max()
        assert update > 1e-3, (name, update)
        np.testing.assert_allclose(two_values.get_tensor(name), one_values.get_tensor(name), rtol=1e-5, atol=1e-5,
                                   err_msg=name)


def test_train_8p_under_horovod_logs_per_rank(equivalent_runs):
    two, _, _ = equivalent_runs
    logs = sorted(glob.glob(os.path.join(two["log"], "train_*_rank*.log")))
    assert [log[-9:] for log in logs] == ["rank0.log", "rank1.log"]
    assert "rank=1/2 mode=train collective=horovod" in read(logs[1])
    assert "batch 4 x 2 device(s)" in read(logs[0])
    assert "Final Performance images/sec" in read(logs[0]) and "Final" not in read(logs[1])
    assert len(glob.glob(os.path.join(two["log"], "events.out.tfevents.*"))) == 1


# ------------------------------------------------------------------ errors without a usable Horovod

@pytest.fixture
def no_horovod(tmp_path):
    """A PYTHONPATH on which `import horovod` fails, as on a machine without it."""
    fake = tmp_path / "fake" / "horovod"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named horovod (simulated)')\n")
    return os.pathsep.join([str(tmp_path / "fake"), REPO_ROOT])


def test_cpu_ranks_without_horovod_are_one_clear_error(tmp_path, no_horovod):
    result = subprocess.run(["bash", "train_8p.sh", "--device=cpu"], cwd=REPO_ROOT,
                            env=_env(RANK_SIZE="2", PYTHONPATH=no_horovod, TMP_MODEL_PATH=str(tmp_path / "model"),
                                     TMP_LOG_PATH=str(tmp_path / "log")),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=600)
    assert result.returncode != 0
    line = _one_error_line(result.stdout)
    assert "Horovod" in line and INSTALL_HINT in line
    assert not (tmp_path / "model").exists() and not (tmp_path / "log").exists()
    # train.py in a process that horovodrun/mpirun started, where horovod does not import.
    result = subprocess.run([sys.executable, "train.py", "--device=cpu"] + SMALL + [
        "--TMP_MODEL_PATH=%s" % (tmp_path / "model")], cwd=REPO_ROOT,
        env=_env(PYTHONPATH=no_horovod, OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "horovod.tensorflow does not import" in errors[0] and INSTALL_HINT in errors[0]
    assert "Traceback" not in result.stderr
