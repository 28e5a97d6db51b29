"""The ModelArts entry scripts: the job configuration file, and whole jobs on the demo data on CPU with
local folders and with obs:// URLs through the moxing double (tests/moxing_double)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf

from conftest import DEMO_DATA, REPO_ROOT, read_case_log
from effnet.modelarts import job_config, storage

MOXING_DOUBLE_DIR = os.path.join(REPO_ROOT, "tests", "moxing_double")
NETWORK = "EfficientNet_for_TensorFlow"
PREFIX = "[CANN-Modelzoo] "


def run_entry(kind, args, tmp_path, config_text, moxing_dir=None):
    """Runs modelarts_entry_<kind>.py from tmp_path with a job configuration file; returns (code, output)."""
    config = tmp_path / "job.yaml"
    config.write_text(config_text)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TMP_") and k not in ("PYTHONPATH", "ASCEND_DEVICE_ID", "TF_CPP_MIN_LOG_LEVEL")}
    env.update(EFFICIENTNET_FORCE_VENV="1", CUDA_VISIBLE_DEVICES="", MOXING_DOUBLE_OBS_ROOT=str(tmp_path / "obs"),
               MOXING_DOUBLE_LOG=str(tmp_path / "moxing.jsonl"))
    if moxing_dir:
        env["PYTHONPATH"] = moxing_dir
    command = [sys.executable, os.path.join(REPO_ROOT, "modelarts_entry_%s.py" % kind),
               "--cache_dir=%s" % tmp_path, "--config_file=%s" % config] + list(args)
    result = subprocess.run(command, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=900)
    return result.returncode, result.stdout


def moxing_calls(tmp_path):
    path = tmp_path / "moxing.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- the job configuration file

def test_job_config_reads_the_yaml_subset():
    text = "\n".join([
        "# a comment",
        "model_name: 'efficientnet-b1'   # quoted",
        'pretrained_path: "obs://bucket/#weights"',
        "num_classes: 5",
        "epochs: 2.5",
        "batch_size:        # empty: the script's default",
        "   # an indented comment line",
        "learning_rate: 1e-3",
        "freeze_pb: True",
    ])
    assert job_config.parse(text) == {"model_name": "efficientnet-b1", "pretrained_path": "obs://bucket/#weights",
                                      "num_classes": 5, "epochs": 2.5, "learning_rate": 0.001, "freeze_pb": True}


@pytest.mark.parametrize("text, message", [
    ("epochs:\n  - 1", "line 2: '- 1' is not a `key: value` line"),
    ("classes: 3", "line 1: unknown key 'classes': use batch_size,"),
    ("num_classes: 0", "line 1: num_classes: '0' must be a positive integer"),
    ("freeze_pb: yes", "freeze_pb: 'yes' must be true or false"),
    ("batch_size: 8\nbatch_size: 16", "line 2: batch_size is set twice"),
    ("epochs: 1\ntrain_steps: 5", "set epochs or train_steps, not both"),
])
def test_job_config_errors_name_the_line(text, message):
    with pytest.raises(job_config.JobConfigError) as error:
        job_config.parse(text, "job.yaml")
    assert str(error.value).startswith("job.yaml") and message in str(error.value)


def test_shipped_job_config_reads_the_same_as_yaml():
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(REPO_ROOT, "configs", "modelarts.yaml")) as f:
        text = f.read()
    ours = job_config.parse(text)
    assert ours == {"freeze_pb": False}
    assert {k: v for k, v in yaml.safe_load(text).items() if v is not None} == ours
    assert set(yaml.safe_load(text)) == set(job_config.KEYS)


def test_user_arguments_win_over_the_file():
    values = {"epochs": 3.0, "batch_size": 16, "num_classes": 5, "freeze_pb": True}
    assert job_config.script_arguments(values, ["--batch_size=8"]) == [
        "--train_epochs=3.0", "--num_classes=5", "--batch_size=8"]
    # A user's run length replaces the file's, whichever of steps or epochs each gives.
    assert job_config.script_arguments(values, ["--train_steps=4"]) == [
        "--batch_size=16", "--num_classes=5", "--train_steps=4"]


# ---------------------------------------------------------------- moxing

def test_moxing_without_copy_parallel_counts_as_absent(tmp_path, monkeypatch):
    impostor = tmp_path / "impostor" / "moxing"
    impostor.mkdir(parents=True)
    (impostor / "__init__.py").write_text('"""An unrelated package that happens to be called moxing."""\n')
    monkeypatch.syspath_prepend(str(impostor.parent))
    monkeypatch.delitem(sys.modules, "moxing", raising=False)
    mox, why_not = storage.load_moxing()
    assert mox is None and "is not Huawei's ModelArts moxing: it has no moxing.file.copy_parallel" in why_not
    with pytest.raises(storage.StorageError, match="obs://b/data is on OBS, which needs Huawei's moxing"):
        storage.Storage(lambda message: None).copy_folder("obs://b/data", str(tmp_path / "data"))


def test_pretrained_prefix_on_obs_copies_its_folder(tmp_path, monkeypatch):
    from effnet.modelarts import entry
    weights = tmp_path / "obs" / "bucket" / "weights"
    weights.mkdir(parents=True)
    for name in ("model.ckpt-7.index", "model.ckpt-7.data-00000-of-00001", "checkpoint"):
        (weights / name).write_text(name)
    monkeypatch.setenv("MOXING_DOUBLE_OBS_ROOT", str(tmp_path / "obs"))
    monkeypatch.syspath_prepend(MOXING_DOUBLE_DIR)
    monkeypatch.delitem(sys.modules, "moxing", raising=False)
    monkeypatch.delitem(sys.modules, "moxing.file", raising=False)
    store = storage.Storage(lambda message: None)
    work = tmp_path / "work"
    local = entry._local_pretrained(store, "obs://bucket/weights/model.ckpt-7", "/data", str(work))
    assert local == str(work / "pretrained" / "model.ckpt-7")
    assert sorted(os.listdir(str(work / "pretrained"))) == sorted(os.listdir(str(weights)))
    folder = entry._local_pretrained(store, "obs://bucket/weights/", "/data", str(tmp_path / "work2"))
    assert folder == str(tmp_path / "work2" / "pretrained") and os.path.isfile(os.path.join(folder, "checkpoint"))
    assert entry._local_pretrained(store, "weights/b0", "/data", str(work)) == "/data/weights/b0"


# ---------------------------------------------------------------- whole jobs

def test_acc_entry_with_local_folders_leaves_results_checkpoint_and_pb(tmp_path):
    train_url = tmp_path / "train_url"
    code, output = run_entry("acc", ["--data_url=%s" % DEMO_DATA, "--train_url=%s" % train_url, "--train_steps=4"],
                             tmp_path, "batch_size: 16\nfreeze_pb: true\n")
    assert code == 0, output[-3000:]
    ours = [line for line in output.splitlines() if line.startswith(PREFIX)]
    assert ours[0].startswith(PREFIX + "data_url %s | train_url %s" % (DEMO_DATA, train_url))
    assert any("--data_path=%s" % DEMO_DATA in line and "--batch_size=16 --train_steps=4" in line for line in ours)
    case_name = "%s_bs16_1p_acc" % NETWORK
    case = read_case_log(str(train_url / (case_name + ".log")))
    assert 0 <= float(case["TrainAccuracy"]) <= 1 and case["BatchSize"] == "16"
    with open(str(train_url / "train_0.log")) as f:
        assert "Top-1 acc: %s" % case["TrainAccuracy"] in f.read()
    assert len((train_url / (case_name + "_loss.txt")).read_text().split()) == 4
    checkpoint = tf.train.latest_checkpoint(str(train_url / "ckpt"))
    assert checkpoint == str(train_url / "ckpt" / "model.ckpt-4")
    assert int(tf.train.load_variable(checkpoint, "global_step")) == 4
    assert (train_url / "ckpt" / "run_config.json").exists()
    graph = tf.GraphDef.FromString((train_url / "efficientnet.pb").read_bytes())
    assert {"input", "logits", "probs"} <= {node.name for node in graph.node}
    assert moxing_calls(tmp_path) == []  # local folders need no moxing


def test_perf_entry_with_obs_urls_copies_in_and_out(tmp_path):
    shutil.copytree(DEMO_DATA, str(tmp_path / "obs" / "bucket" / "data"))
    code, output = run_entry("perf", ["--data_url=obs://bucket/data", "--train_url=obs://bucket/output/",
                                      "--train_steps=4", "--batch_size=8"], tmp_path, "", MOXING_DOUBLE_DIR)
    assert code == 0, output[-3000:]
    copies = [call["args"] for call in moxing_calls(tmp_path) if call["call"] == "copy_parallel"]
    assert len(copies) == 2
    assert copies[0][0] == "obs://bucket/data" and copies[0][1].startswith(str(tmp_path))
    assert copies[1][0].startswith(str(tmp_path)) and copies[1][1] == "obs://bucket/output/"
    output_dir = tmp_path / "obs" / "bucket" / "output"
    case = read_case_log(str(output_dir / ("%s_bs8_1p_perf.log" % NETWORK)))
    assert float(case["ActualFPS"]) > 0 and "TrainAccuracy" not in case
    assert (output_dir / "ckpt" / "model.ckpt-4.index").exists() and not (output_dir / "efficientnet.pb").exists()
    assert PREFIX + "copying obs://bucket/data -> " in output


def test_failed_training_still_copies_its_log_out(tmp_path):
    code, output = run_entry("acc", ["--data_url=%s" % DEMO_DATA, "--train_url=obs://bucket/output",
                                     "--model_name=efficientnet-b99"], tmp_path, "freeze_pb: true\n",
                             MOXING_DOUBLE_DIR)
    assert code == 1, output[-3000:]
    assert PREFIX + "training failed with exit code 1; copying its log to obs://bucket/output" in output
    copies = [call["args"] for call in moxing_calls(tmp_path) if call["call"] == "copy_parallel"]
    assert len(copies) == 1 and copies[0][1] == "obs://bucket/output"
    output_dir = tmp_path / "obs" / "bucket" / "output"
    with open(str(output_dir / "train_0.log")) as f:
        assert "efficientnet-b99" in f.read()
    assert not (output_dir / "ckpt").exists() and not (output_dir / "efficientnet.pb").exists()


def test_obs_without_moxing_fails_before_training(tmp_path):
    code, output = run_entry("acc", ["--data_url=obs://bucket/data", "--train_url=%s" % tmp_path], tmp_path, "")
    assert code == 1
    errors = [line for line in output.splitlines() if line.startswith(PREFIX + "error: ")]
    assert len(errors) == 1 and "obs://bucket/data is on OBS, which needs Huawei's moxing" in errors[0]
    assert "running bash" not in output
