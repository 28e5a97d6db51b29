"""The README's first command on a fresh setup: `bash train_1p.sh && bash test_1p.sh` on the bundled
demo digits reaches the promised accuracy, and predict.py then names digits from labels.txt."""
import os
import re
import subprocess

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import preprocess
from conftest import DEMO_DATA, REPO_ROOT, run_python


def _bash(script, env):
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, script)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMP_") and k != "PYTHONPATH"}
    env.update(EFFICIENTNET_FORCE_VENV="1", CUDA_VISIBLE_DEVICES="", TMP_MODEL_PATH=str(root / "model"),
               TMP_LOG_PATH=str(root / "log"), TMP_WEIGHTS_PATH=str(root / "weights"))
    os.makedirs(env["TMP_WEIGHTS_PATH"])
    train_output = _bash("train_1p.sh", env)
    test_output = _bash("test_1p.sh", env)
    return root, train_output, test_output


def test_demo_reaches_the_promised_accuracy(demo_run):
    root, train_output, test_output = demo_run
    assert "step 1000/1000" in train_output
    assert "Final Performance images/sec" in train_output
    assert os.path.exists(str(root / "model" / "model.ckpt-1000.index"))
    assert "Images evaluated: 359" in test_output
    top1 = float(re.search(r"Top-1 acc: ([0-9.]+)", test_output).group(1))
    assert top1 >= 0.95, test_output[-2000:]


def test_predict_names_digits_from_labels_txt(demo_run, tmp_path):
    root = demo_run[0]
    record_file = preprocess.find_record_files(DEMO_DATA, "validation")[0]
    files, labels = [], []
    for index, record in enumerate(tf.python_io.tf_record_iterator(record_file)):
        if index == 20:
            break
        example = tf.train.Example.FromString(record)
        feature = example.features.feature
        path = tmp_path / ("digit_%02d.jpg" % index)
        path.write_bytes(feature["image/encoded"].bytes_list.value[0])
        files.append(str(path))
        labels.append(str(feature["image/class/label"].int64_list.value[0]))
    (tmp_path / "notes.txt").write_text("not an image")
    result = run_python(["predict.py", "--checkpoint=%s" % (root / "model"), str(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert "skipping %s" % (tmp_path / "notes.txt") in result.stderr
    predicted = re.findall(r"^  1\. (\S+) \((\d)\)", result.stdout, flags=re.M)
    assert len(predicted) == 20
    assert all(name == index for name, index in predicted), "class names should be the digits of labels.txt"
    accuracy = np.mean([name == label for (name, _), label in zip(predicted, labels)])
    assert accuracy >= 0.8, result.stdout
