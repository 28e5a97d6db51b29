"""The shell launchers end to end on the demo data with tiny step counts: train_1p.sh, test_1p.sh and
the ModelZoo test scripts (final-result lines, ${CaseName}.log, errors), on CPU and through the
npu_bridge test double."""
import json
import os
import re
import subprocess

import pytest

from conftest import DEMO_DATA, NPU_DOUBLE_DIR, REPO_ROOT, read_case_log

NETWORK = "EfficientNet_for_TensorFlow"
# 0.022 epochs of the demo's 1438 images at batch 8 are 4 steps: a user's --epochs wins over the demo
# recipe's --max_steps=1000.
TINY_TRAIN = ["--epochs=0.022", "--log_every_n_steps=2", "--save_checkpoints_steps=2", "--batch_size=8"]
COMPILED_LINE = "The model has been compiled on the Ascend AI processor"


def run_script(script, args, cwd, env_extra=None):
    """Runs `bash <script> args` from cwd with the project venv; returns (exit code, stdout + stderr)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TMP_") and k not in ("PYTHONPATH", "ASCEND_DEVICE_ID", "TF_CPP_MIN_LOG_LEVEL")}
    env["EFFICIENTNET_FORCE_VENV"] = "1"
    env.update(env_extra or {})
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, script)] + list(args), cwd=str(cwd), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                            timeout=600)
    return result.returncode, result.stdout


def final_result(output):
    """The lines printed after the Final result marker."""
    marker = "------------------ Final result ------------------"
    assert marker in output, output[-3000:]
    return output.split(marker, 1)[1].strip().splitlines()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny train_1p.sh run (extra flags override the demo recipe) into temporary TMP_* folders."""
    root = tmp_path_factory.mktemp("train_1p")
    paths = {"TMP_MODEL_PATH": str(root / "model"), "TMP_LOG_PATH": str(root / "log"),
             "TMP_WEIGHTS_PATH": str(root / "weights"), "TMP_DATA_PATH": DEMO_DATA}
    os.makedirs(paths["TMP_WEIGHTS_PATH"])
    code, output = run_script("train_1p.sh", TINY_TRAIN, root, paths)
    assert code == 0, output[-3000:]
    return paths, output


def test_train_1p_writes_checkpoints_and_log(trained):
    paths, output = trained
    model_files = os.listdir(paths["TMP_MODEL_PATH"])
    assert {"model.ckpt-2.index", "model.ckpt-4.index", "checkpoint"} <= set(model_files)
    with open(os.path.join(paths["TMP_MODEL_PATH"], "run_config.json")) as f:
        assert json.load(f)["image_size"] == 32  # the demo recipe was applied
    logs = [name for name in os.listdir(paths["TMP_LOG_PATH"]) if re.match(r"train_\d{8}_\d{6}\.log$", name)]
    assert len(logs) == 1
    with open(os.path.join(paths["TMP_LOG_PATH"], logs[0])) as f:
        log = f.read()
    assert log.startswith("[train_1p] data: %s | model: %s" % (DEMO_DATA, paths["TMP_MODEL_PATH"]))
    assert "step 4/4 loss" in log and "Final Performance images/sec :" in log
    assert "Final Performance images/sec :" in output  # tee: the terminal gets it too
    # The package's own lines, not screens of TensorFlow deprecation notices or doubled INFO lines.
    assert "deprecated" not in log and "Instructions for updating" not in log and "INFO:tensorflow" not in log
    assert "no validation during training" in log  # 32 images trained: fewer than one validation pass


def test_test_1p_prints_accuracy(trained, tmp_path):
    paths, _ = trained
    env = {k: paths[k] for k in ("TMP_DATA_PATH", "TMP_MODEL_PATH", "TMP_LOG_PATH")}
    code, output = run_script("test_1p.sh", ["--batch_size=100"], tmp_path, env)
    assert code == 0, output[-3000:]
    assert "Images evaluated: 359" in output
    assert re.search(r"^Top-1 acc: \d\.\d{4}$", output, re.M), output[-2000:]
    assert "deprecated" not in output and "INFO:tensorflow" not in output
    assert any(name.startswith("test_") for name in os.listdir(paths["TMP_LOG_PATH"]))


def test_test_1p_passes_python_exit_code(tmp_path):
    code, output = run_script("test_1p.sh", [], tmp_path,
                              {"TMP_MODEL_PATH": str(tmp_path / "none"), "TMP_LOG_PATH": str(tmp_path)})
    assert code == 1
    assert "error: " in output


def test_train_full_1p_on_cpu(tmp_path):
    out = tmp_path / "out"
    code, output = run_script("test/train_full_1p.sh",
                              ["--data_path=%s" % DEMO_DATA, "--train_steps=4", "--output_path=%s" % out,
                               "--batch_size=16"], tmp_path)
    assert code == 0, output[-3000:]
    lines = final_result(output)
    assert re.match(r"Final Performance images/sec : \d+\.\d+$", lines[0]), lines
    assert re.match(r"Final Train Accuracy : \d\.\d{4}$", lines[1]), lines
    assert re.match(r"E2E Training Duration sec : \d+$", lines[2]), lines
    assert COMPILED_LINE not in output and "[Warning] the device was npu" not in output
    case_name = "%s_bs16_1p_acc" % NETWORK
    case = read_case_log(str(out / (case_name + ".log")))
    assert list(case) == ["Network", "RankSize", "BatchSize", "DeviceType", "CaseName", "ActualFPS",
                          "TrainingTime", "TrainAccuracy", "ActualLoss", "E2ETrainingTime"]
    assert case["CaseName"] == case_name and case["BatchSize"] == "16" and case["RankSize"] == "1"
    fps = float(case["ActualFPS"])
    # Printed with two decimals: within 0.005 of the exact value, however fast or busy the machine.
    assert float(case["TrainingTime"]) == pytest.approx(16 * 1000 / fps, abs=0.005 + 1e-9)
    assert case["TrainAccuracy"] == lines[1].split()[-1]  # the evaluation's top-1
    with open(str(out / "train_0.log")) as f:
        log = f.read()
    assert "Top-1 acc: %s" % case["TrainAccuracy"] in log and "Images evaluated: 359" in log
    with open(str(out / (case_name + "_loss.txt"))) as f:
        losses = f.read().split()
    assert len(losses) == 4 and case["ActualLoss"] == losses[-1]
    assert os.path.exists(str(out / "ckpt" / "model.ckpt-4.index"))


def test_train_performance_1p_through_npu_double(tmp_path):
    """The NPU path: dump/profiling flags reach effnet/devices/device.py, and the missing compile line is warned about."""
    out = tmp_path / "out"
    earlier = out / "ckpt"
    earlier.mkdir(parents=True)
    (earlier / "checkpoint").write_text("earlier run")
    code, output = run_script("test/train_performance_1p.sh",
                              ["--data_path=%s" % DEMO_DATA, "--train_steps=4", "--output_path=%s" % out,
                               "--over_dump=True", "--profiling"], tmp_path, {"PYTHONPATH": NPU_DOUBLE_DIR})
    assert code == 0, output[-3000:]
    lines = final_result(output)
    assert re.match(r"Final Performance images/sec : \d+\.\d+$", lines[0]), lines
    assert re.match(r"E2E Training Duration sec : \d+$", lines[1]), lines
    assert "[Warning] the device was npu" in output
    case_name = "%s_bs32_1p_perf" % NETWORK
    case = read_case_log(str(out / (case_name + ".log")))
    assert "TrainAccuracy" not in case and case["CaseName"] == case_name
    assert float(case["ActualFPS"]) > 0 and case["ActualLoss"]
    assert os.path.isdir(str(out / "overflow_dump")) and os.path.isdir(str(out / "profiling"))
    kept = [p for p in os.listdir(str(out)) if p.startswith("ckpt_")]
    assert len(kept) == 1 and (out / kept[0] / "checkpoint").read_text() == "earlier run"
    with open(str(out / "train_0.log")) as f:
        assert "device: device=npu" in f.read()


@pytest.mark.parametrize("args, message", [
    ([], '[Error] para "data_path" must be config'),
    (["--data_path=%s" % DEMO_DATA, "--over_dump=maybe"], '[Error] para "over_dump" must be True or False'),
    (["--data_path=%s" % DEMO_DATA, "--train_steps=4", "--train_epochs=1"], "not both"),
    (["--data_path=%s" % DEMO_DATA, "positional"], '[Error] unexpected argument "positional"'),
])
def test_test_scripts_reject_bad_arguments(tmp_path, args, message):
    for script in ("test/train_full_1p.sh", "test/train_performance_1p.sh"):
        code, output = run_script(script, args + ["--output_path=%s" % tmp_path], tmp_path)
        assert code == 1 and message in output, output
        assert not os.path.exists(str(tmp_path / "train_0.log"))


def test_demo_recipe_is_the_same_in_every_launcher():
    def demo_args(script):
        with open(os.path.join(REPO_ROOT, script)) as f:
            match = re.search(r"^DEMO_ARGS=\((.*?)\)$", f.read(), re.M | re.S)
        assert match, script
        return match.group(1).split()

    assert demo_args("train_1p.sh") == demo_args("test/train_full_1p.sh")
    assert "--image_size=32" in demo_args("train_1p.sh")


def test_modelzoo_level_lines():
    with open(os.path.join(REPO_ROOT, "modelzoo_level.txt")) as f:
        entries = dict(line.strip().split(":") for line in f if line.strip())
    assert set(entries) >= {"FuncStatus", "PrecisionStatus", "PerfStatus"}
    assert set(entries.values()) <= {"OK", "POK", "NOK"}
