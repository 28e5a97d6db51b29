"""Issue 23: a damaged run record, a validation cut short, another class count at resume, tiny images,
Ctrl-C in make_tfrecords and misleading messages. Each case failed on 60dea45.

One short training run (module fixture: Lite0 at 32 px on the demo digits, 4 steps, validated at step 4)
gives the model folder the end-to-end cases copy and damage; the rest runs in-process on small inputs."""
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from conftest import DEMO_DATA, REPO_ROOT, device_flags, python_env, run_python

import make_tfrecords
import preprocess
import train
from effnet.checkpoints import checkpoint_reader, run_config
from effnet.devices import device
from effnet.evaluation import evaluation
from effnet.training import training_policy
from effnet.weights import weight_readers

STEPS = 4


def _train_args(model_dir, *extra):
    return ["train.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_dir,
            "--TMP_LOG_PATH=%s_log" % model_dir, "--TMP_WEIGHTS_PATH=", "--model_name=efficientnet-lite0",
            "--image_size=32", "--batch_size=32", "--optimizer=sgd", "--moving_average_decay=0",
            "--max_steps=%d" % STEPS, "--save_checkpoints_steps=2", "--eval_every_n_steps=%d" % STEPS,
            "--keep_checkpoint_max=2"] + list(extra)


def _error_line(result):
    """The one 'error: ' line of a failed run (asserting there is exactly one and no traceback)."""
    assert result.returncode not in (0, None), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model folder after a 4-step run validated at step 4: model.ckpt-2, model.ckpt-4, the history
    [step 4], best/ (step 4), run_config.json and labels.txt."""
    model_dir = str(tmp_path_factory.mktemp("round3") / "model")
    result = run_python(_train_args(model_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [entry["step"] for entry in training_policy.read_history(model_dir, STEPS)] == [STEPS]
    return model_dir


@pytest.fixture
def model_copy(trained, tmp_path):
    copy = str(tmp_path / "model")
    shutil.copytree(trained, copy)
    return copy


# 1. A damaged run record stops every tool with one line naming it; it is never read as "no record".
def test_damaged_run_record_is_one_line_naming_it(model_copy, tmp_path):
    record = os.path.join(model_copy, run_config.RUN_CONFIG_FILE)
    settings = json.loads(open(record).read())
    cases = [("{not json", "is damaged"),
             (json.dumps(dict(settings, image_size="abc")), "image_size 'abc' is not a positive whole number"),
             (json.dumps(dict(settings, model_name="efficientnet-b99")), "'efficientnet-b99' is not a known model"),
             (json.dumps([1, 2]), "not a JSON object")]
    for text, fragment in cases:
        with open(record, "w") as handle:
            handle.write(text)
        with pytest.raises(run_config.RunConfigError, match=re.escape(fragment)):
            run_config.read(model_copy)
    with open(record, "w") as handle:
        handle.write('{"image_size": 32, "model_name": "efficientnet-lite0",')  # cut short by a full disk
    image = os.path.join(tmp_path, "digit.png")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    runs = {
        "test.py": run_python(["test.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_copy]),
        "predict.py": run_python(["predict.py", "--checkpoint=%s" % model_copy, image]),
        "train.py": run_python(_train_args(model_copy, "--max_steps=6")),
    }
    for tool, result in runs.items():
        if tool == "predict.py":  # predict.py prints its errors without absl's sys.exit
            assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
            line = [l for l in result.stderr.splitlines() if l.startswith("error: ")][-1]
        else:
            line = _error_line(result)
        assert record in line and "is damaged" in line, (tool, line)
        assert "Top-1" not in result.stdout
    assert os.path.exists(os.path.join(model_copy, "model.ckpt-4.index"))
    assert not os.path.exists(os.path.join(model_copy, "model.ckpt-6.index")), "train.py must not go on"
    # Wrong types through test.py and train.py: one line, no traceback.
    with open(record, "w") as handle:
        json.dump(dict(settings, image_size="abc"), handle)
    line = _error_line(run_python(["test.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_copy]))
    assert "image_size 'abc'" in line


# 3. A validation cut short by a crash is redone at resume; partial files of the cut-short best/ save go.
def _history_steps(model_dir):
    return [entry["step"] for entry in training_policy.read_history(model_dir, 10 ** 9)]


def _best_step(model_dir):
    best_dir = os.path.join(model_dir, training_policy.BEST_DIR)
    prefix, damaged = checkpoint_reader.newest_intact_checkpoint(best_dir)
    assert not damaged
    return checkpoint_reader.checkpoint_step(prefix) if prefix else None


def test_validation_killed_during_the_best_save_is_redone_at_resume(model_copy):
    # What kill -9 while best/ is written leaves: step 4 saved, its validation not in the history, a partial
    # data file and TensorFlow's temporary folder in best/, no checkpoint there.
    best_dir = os.path.join(model_copy, training_policy.BEST_DIR)
    shutil.rmtree(best_dir)
    os.makedirs(os.path.join(best_dir, "model.ckpt-4_temp_0123abcd"))
    partial = os.path.join(best_dir, "model.ckpt-4.data-00000-of-00001.tempstate8473529461")
    with open(partial, "wb") as handle:
        handle.write(os.urandom(2048))
    training_policy.write_history(model_copy, [])
    result = run_python(_train_args(model_copy))  # the same command again
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the validation of step 4 was cut short: redoing it" in result.stderr
    assert _history_steps(model_copy) == [4]
    assert _best_step(model_copy) == 4
    assert run_config.read(best_dir)["best_step"] == 4
    assert sorted(name for name in os.listdir(best_dir) if "temp" in name) == []


def test_failed_best_save_keeps_the_validation_and_names_what_was_saved(model_copy):
    best_dir = os.path.join(model_copy, training_policy.BEST_DIR)
    shutil.rmtree(best_dir)
    training_policy.write_history(model_copy, [])
    # A deterministic write failure inside best/: TensorFlow cannot move the index into place.
    os.makedirs(os.path.join(best_dir, "model.ckpt-4.index"))
    line = _error_line(run_python(_train_args(model_copy)))
    assert "validation of step 4 done" in line and "recorded in validation_history.json" in line, line
    assert "%s could not be written" % best_dir in line, line
    assert "%s is saved and intact" % os.path.join(model_copy, "model.ckpt-4") in line, line
    assert "no good checkpoint" not in line
    assert _history_steps(model_copy) == [4]
    # Once the folder is fixed, the same command writes best/ from the recorded validation, without redoing it.
    os.rmdir(os.path.join(best_dir, "model.ckpt-4.index"))
    result = run_python(_train_args(model_copy))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best/ lacks the best validation (step 4" in result.stderr
    assert "redoing it" not in result.stderr
    assert _history_steps(model_copy) == [4] and _best_step(model_copy) == 4


def test_best_is_replaced_only_by_a_better_validation_when_the_history_is_gone(model_copy):
    best_dir = os.path.join(model_copy, training_policy.BEST_DIR)
    run_config.write(best_dir, **dict(run_config.read(best_dir), best_top1=1.0))  # nothing can beat it
    os.remove(os.path.join(model_copy, training_policy.HISTORY_FILE))
    result = run_python(_train_args(model_copy, "--max_steps=6", "--eval_every_n_steps=6"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert _history_steps(model_copy) == [6]
    assert _best_step(model_copy) == 4, "best/ (top1 1.0) was replaced by a worse validation"
    with open(os.path.join(model_copy, training_policy.HISTORY_FILE), "w") as handle:
        handle.write('[{"step": 6, "top1": 0.1')  # cut short
    line = _error_line(run_python(_train_args(model_copy, "--max_steps=8", "--eval_every_n_steps=8")))
    assert "validation_history.json is damaged" in line
    assert _best_step(model_copy) == 4 and not os.path.exists(os.path.join(model_copy, "model.ckpt-8.index"))


# 4. Another class count at resume is refused before building, with what to do.
def test_resume_with_another_class_count_says_so_before_building(model_copy):
    before = sorted(os.listdir(model_copy))
    line = _error_line(run_python(_train_args(model_copy, "--num_classes=12", "--max_steps=6")))
    assert "the class count differs from the checkpoint's" in line, line
    assert "10-class checkpoint (model.ckpt-4)" in line and "12 classes (--num_classes=12)" in line, line
    assert "new TMP_MODEL_PATH" in line and "--TMP_WEIGHTS_PATH=%s" % model_copy in line, line
    assert sorted(os.listdir(model_copy)) == before
    line = _error_line(run_python(_train_args(model_copy, "--model_name=efficientnet-b0", "--max_steps=6")))
    assert "holds efficientnet-lite0 checkpoints" in line and "new TMP_MODEL_PATH" in line, line
