"""train.py and test.py as users run them: fine-tuning, resuming after a crash, and bad input."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

from conftest import DEMO_DATA, REPO_ROOT, listed_checkpoint_steps, run_python
from effnet.checkpoints import checkpoint_reader

SMALL = ["--TMP_DATA_PATH=%s" % DEMO_DATA, "--image_size=32", "--batch_size=8", "--log_every_n_steps=2"]


def _paths(tmp_path):
    return ["--TMP_MODEL_PATH=%s" % (tmp_path / "model"), "--TMP_LOG_PATH=%s" % (tmp_path / "log")]


def _assert_clean_error(result, *fragments):
    """A failed run: exit code != 0, one `error:` line naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.count(errors[0][len("error: "):]) == 1, "the error is printed once: " + result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_fine_tune_from_the_official_checkpoint(tmp_path, fixture_dir):
    # Laid out as Google's archives unpack: weights/<model>/model.ckpt-*.
    unpacked = tmp_path / "weights" / "efficientnet-b0"
    unpacked.mkdir(parents=True)
    for name in os.listdir(os.path.join(fixture_dir, "ckpt")):
        os.symlink(os.path.join(fixture_dir, "ckpt", name), str(unpacked / name))
    result = run_python(["train.py"] + SMALL + _paths(tmp_path) + [
        "--TMP_WEIGHTS_PATH=%s" % (tmp_path / "weights"), "--max_steps=2", "--freeze_base"])
    assert result.returncode == 0, result.stderr
    assert "loaded pretrained EMA weights" in result.stderr
    skipped = [line for line in result.stderr.splitlines() if "new head (shape differs, trained from zero)" in line]
    assert len(skipped) == 1
    assert "efficientnet-b0/head/dense/kernel" in skipped[0] and "efficientnet-b0/head/dense/bias" in skipped[0]
    assert "stem" not in skipped[0]
    assert listed_checkpoint_steps(tmp_path / "model") == [2]
    reader = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(str(tmp_path / "model")))
    shapes = reader.get_variable_to_shape_map()
    assert shapes["efficientnet-b0/head/dense/kernel"] == [1280, 10]
    assert "efficientnet-b0/head/dense/kernel/ExponentialMovingAverage" in shapes
    assert "efficientnet-b0/head/dense/kernel/Momentum" in shapes
    assert "efficientnet-b0/stem/conv2d/kernel/Momentum" not in shapes, "--freeze_base trains only the head"
    official = tf.train.NewCheckpointReader(os.path.join(fixture_dir, "ckpt", "model.ckpt-3"))
    # The frozen base keeps the official EMA values exactly, batch-norm statistics included.
    for name in ("efficientnet-b0/blocks_15/conv2d_1/kernel",
                 "efficientnet-b0/blocks_15/tpu_batch_normalization_2/moving_mean"):
        np.testing.assert_array_equal(reader.get_tensor(name),
                                      official.get_tensor(name + "/ExponentialMovingAverage"))
        assert not np.array_equal(official.get_tensor(name), official.get_tensor(name + "/ExponentialMovingAverage"))
    assert np.isfinite(reader.get_tensor("efficientnet-b0/head/dense/kernel")).all()
    # predict.py names the fine-tuned model's classes from the demo data's labels.txt (digits 0..9).
    digit = tmp_path / "digit.jpg"
    record = next(tf.python_io.tf_record_iterator(os.path.join(DEMO_DATA, "validation-00000-of-00001")))
    digit.write_bytes(tf.train.Example.FromString(record).features.feature["image/encoded"].bytes_list.value[0])
    predicted = run_python(["predict.py", "--checkpoint=%s" % (tmp_path / "model"), str(digit)])
    assert predicted.returncode == 0, predicted.stderr
    names = re.findall(r"^  \d\. (\S+) \((\d)\)", predicted.stdout, flags=re.M)
    assert len(names) == 5 and all(name == index for name, index in names), predicted.stdout


def test_a_new_head_on_pretrained_weights_starts_at_zero(tmp_path, fixture_dir):
    """The official head init (uniform +-1/sqrt(classes)) is sized for 1000 classes; on pretrained features
    with 10 it would start with large logits. With learning rate 0 the saved head is what training started
    from; the pretrained base is loaded as it was."""
    result = run_python(["train.py"] + SMALL + _paths(tmp_path) + [
        "--TMP_WEIGHTS_PATH=%s" % os.path.join(fixture_dir, "ckpt"), "--max_steps=1", "--learning_rate=0"])
    assert result.returncode == 0, result.stderr
    reader = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(str(tmp_path / "model")))
    for name in ("efficientnet-b0/head/dense/kernel", "efficientnet-b0/head/dense/bias"):
        assert not reader.get_tensor(name).any() and not reader.get_tensor(name + "/ExponentialMovingAverage").any()
    official = tf.train.NewCheckpointReader(os.path.join(fixture_dir, "ckpt", "model.ckpt-3"))
    name = "efficientnet-b0/blocks_15/conv2d_1/kernel"
    np.testing.assert_array_equal(reader.get_tensor(name), official.get_tensor(name + "/ExponentialMovingAverage"))


def test_test_py_evaluates_the_official_checkpoint(fixture_dir):
    result = run_python(["test.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--batch_size=100",
                         "--TMP_MODEL_PATH=%s" % os.path.join(fixture_dir, "ckpt")])
    assert result.returncode == 0, result.stderr
    assert "efficientnet-b0, EMA weights" in result.stdout
    assert "Images evaluated: 359" in result.stdout
    assert "Top-1 acc: " in result.stdout and "Top-5 acc: " in result.stdout
    assert "1000 classes, image size 224" in result.stderr
    # Reports go beside checkpoints train.py wrote, never into a downloaded (here: shared) checkpoint folder.
    assert "per-class reports not written" in result.stderr
    assert not [name for name in os.listdir(os.path.join(fixture_dir, "ckpt")) if name.startswith("eval_")]


def test_training_resumes_after_sigkill(tmp_path):
    args = [sys.executable, "train.py"] + SMALL + _paths(tmp_path) + [
        "--TMP_WEIGHTS_PATH=", "--model_name=efficientnet-lite0", "--max_steps=60", "--save_checkpoints_steps=10",
        "--optimizer=adam", "--learning_rate=0.001"]
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not listed_checkpoint_steps(tmp_path / "model") and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Where the kill landed changes nothing below: the rerun resumes from the newest intact checkpoint on disk
    # (the state file lags behind a save whose retention the kill cut off) and ends at step 60.
    newest, _ = checkpoint_reader.newest_intact_checkpoint(str(tmp_path / "model"))
    assert newest is not None, "a checkpoint was listed before the kill"
    killed_at = checkpoint_reader.checkpoint_step(newest)
    result = subprocess.run(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and "(step %d)" % killed_at in result.stderr
    assert killed_at == 60 or "step 60/60" in result.stderr
    assert max(listed_checkpoint_steps(tmp_path / "model")) == 60
    assert "E2E Training Duration sec" in result.stdout
    # A finished run started again trains nothing and keeps its checkpoints.
    again = subprocess.run(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=600)
    assert again.returncode == 0 and "nothing to train" in again.stderr
    assert max(listed_checkpoint_steps(tmp_path / "model")) == 60


def test_missing_and_empty_data_paths(tmp_path):
    missing = run_python(["train.py", "--TMP_DATA_PATH=%s" % (tmp_path / "nowhere")] + _paths(tmp_path))
    _assert_clean_error(missing, "does not exist")
    (tmp_path / "empty").mkdir()
    empty = run_python(["train.py", "--TMP_DATA_PATH=%s" % (tmp_path / "empty")] + _paths(tmp_path))
    _assert_clean_error(empty, "is empty")
    # test.py names the data path first, not a class-count mismatch with ImageNet defaults (issue 13).
    evaluation = run_python(["test.py", "--TMP_DATA_PATH=%s" % (tmp_path / "empty"),
                             "--TMP_MODEL_PATH=%s" % (tmp_path / "nowhere")])
    _assert_clean_error(evaluation, "is empty")
    evaluation = run_python(["test.py", "--TMP_DATA_PATH=%s" % DEMO_DATA,
                             "--TMP_MODEL_PATH=%s" % (tmp_path / "nowhere")])
    _assert_clean_error(evaluation, "checkpoint not found")


def test_truncated_record_file(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DEMO_DATA, str(data))
    shard = data / "train-00000-of-00002"
    content = shard.read_bytes()
    shard.write_bytes(content[:len(content) // 2])
    result = run_python(["train.py", "--TMP_DATA_PATH=%s" % data, "--image_size=32", "--batch_size=8",
                         "--max_steps=50", "--TMP_WEIGHTS_PATH="] + _paths(tmp_path))
    _assert_clean_error(result, "truncated or corrupt", "make_tfrecords.py")
    assert shard.read_bytes() == content[:len(content) // 2]


def test_pretrained_checkpoint_of_another_model(tmp_path, fixture_dir):
    result = run_python(["train.py"] + SMALL + _paths(tmp_path) + [
        "--model_name=efficientnet-b1", "--TMP_WEIGHTS_PATH=%s" % os.path.join(fixture_dir, "ckpt")])
    _assert_clean_error(result, "seems to hold efficientnet-b0", "--model_name=efficientnet-b0")
    assert os.path.exists(os.path.join(fixture_dir, "ckpt", "model.ckpt-3.index"))


def test_num_classes_below_the_data_labels(tmp_path):
    result = run_python(["train.py"] + SMALL + _paths(tmp_path) + ["--num_classes=5"])
    _assert_clean_error(result, "10 classes", "--num_classes=5")


def test_model_path_that_is_a_file(tmp_path):
    target = tmp_path / "model"
    target.write_text("precious")
    result = run_python(["train.py"] + SMALL + _paths(tmp_path))
    _assert_clean_error(result, "is a file")
    assert target.read_text() == "precious"


def test_existing_checkpoint_of_another_model_is_kept(tmp_path):
    first = run_python(["train.py"] + SMALL + _paths(tmp_path) + [
        "--TMP_WEIGHTS_PATH=", "--model_name=efficientnet-lite0", "--max_steps=1"])
    assert first.returncode == 0, first.stderr
    before = sorted(os.listdir(str(tmp_path / "model")))
    second = run_python(["train.py"] + SMALL + _paths(tmp_path) + [
        "--TMP_WEIGHTS_PATH=", "--model_name=efficientnet-b0", "--max_steps=2"])
    _assert_clean_error(second, "holds efficientnet-lite0 checkpoints", "not efficientnet-b0")
    assert sorted(os.listdir(str(tmp_path / "model"))) == before
    # Those weights, given as pretrained weights, choose the model when --model_name is not given.
    third = run_python(["train.py"] + SMALL + [
        "--TMP_MODEL_PATH=%s" % (tmp_path / "fine_tuned"), "--TMP_LOG_PATH=%s" % (tmp_path / "log"),
        "--TMP_WEIGHTS_PATH=%s" % (tmp_path / "model"), "--max_steps=1"])
    assert third.returncode == 0, third.stderr
    assert "model efficientnet-lite0, 10 classes" in third.stderr
    assert "loaded pretrained EMA weights" in third.stderr
