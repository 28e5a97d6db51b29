"""The shell launchers end to end on the demo data with tiny step counts: train_1p.sh, test_1p.sh and
the ModelZoo test scripts (final-result lines, ${CaseName}.log, errors), on CPU and through the
npu_bridge test double."""
import base64
import json
import os
import re
import subprocess

import pytest
import tensorflow.compat.v1 as tf

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
    # The demo recipe, its learning rate scaled to the batch of 8 and its --max_steps replaced by --epochs.
    (flags_line,) = [line for line in log.splitlines() if line.startswith("[train_1p] recipe demo: train.py ")]
    flags = flags_line.split()[4:]
    assert "--image_size=32" in flags and "--learning_rate=0.00075" in flags
    assert not [flag for flag in flags if flag.startswith("--max_steps")]
    assert flags[-len(TINY_TRAIN):] == TINY_TRAIN
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
    (flags_line,) = [line for line in output.splitlines() if line.startswith("[train_full_1p.sh] recipe demo: ")]
    assert {"--batch_size=16", "--learning_rate=0.0015", "--max_steps=4", "--log_every_n_steps=1"} <= set(
        flags_line.split()[4:])
    lines = final_result(output)
    assert re.match(r"Final Performance images/sec : \d+\.\d+$", lines[0]), lines
    assert re.match(r"Final Train Accuracy : \d\.\d{4}$", lines[1]), lines
    assert re.match(r"E2E Training Duration sec : \d+$", lines[2]), lines
    assert COMPILED_LINE not in output and "[Warning] the device was npu" not in output
    assert "[Warning] the model was not compiled on the Ascend AI processor: this run used cpu" in output
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
    """The NPU path: dump/profiling flags reach effnet/devices/device.py, and the missing compile line is warned
    about."""
    out = tmp_path / "out"
    earlier = out / "ckpt"
    earlier.mkdir(parents=True)
    (earlier / "checkpoint").write_text("earlier run")
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    code, output = run_script("test/train_performance_1p.sh",
                              ["--data_path=%s" % DEMO_DATA, "--train_steps=4", "--output_path=%s" % out,
                               "--over_dump=True", "--profiling", "--use_mixlist=True", "--fusion_off_flag=True",
                               "--auto_tune=True"], tmp_path,
                              {"PYTHONPATH": NPU_DOUBLE_DIR, "NPU_DOUBLE_CALLS_DIR": str(calls_dir)})
    assert code == 0, output[-3000:]
    with open(str(calls_dir / "calls_rank0.json")) as f:
        (config,) = [tf.ConfigProto.FromString(base64.b64decode(kwargs["config"]["proto"]))
                     for name, kwargs in json.load(f) if name == "Session"]
    (custom,) = config.graph_options.rewrite_options.custom_optimizers
    options = custom.parameter_map
    assert options["modify_mixlist"].s.decode() == os.path.join(REPO_ROOT, "configs", "ops_info.json")
    assert options["fusion_switch_file"].s.decode() == os.path.join(REPO_ROOT, "configs", "fusion_switch.cfg")
    assert options["auto_tune_mode"].s == b"RL,GA"
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
    (["--data_path=%s" % DEMO_DATA, "--use_mixlist=True", "--mixlist_file=none.json"],
     "[Error] mixlist_file none.json not found"),
    (["--data_path=%s" % DEMO_DATA, "--fusion_off_flag=True", "--fusion_off_file=none.cfg"],
     "[Error] fusion_off_file none.cfg not found"),
])
def test_test_scripts_reject_bad_arguments(tmp_path, args, message):
    for script in ("test/train_full_1p.sh", "test/train_performance_1p.sh"):
        code, output = run_script(script, args + ["--output_path=%s" % tmp_path], tmp_path)
        assert code == 1 and message in output, output
        assert not os.path.exists(str(tmp_path / "train_0.log"))


def test_modelzoo_level_lines():
    with open(os.path.join(REPO_ROOT, "modelzoo_level.txt")) as f:
        entries = dict(line.strip().split(":") for line in f if line.strip())
    assert set(entries) >= {"FuncStatus", "PrecisionStatus", "PerfStatus", "GPUStatus", "NPUMigrationStatus",
                            "AutoTune", "ModelConvert", "QuantStatus"}
    assert set(entries.values()) <= {"OK", "POK", "NOK"}


@pytest.mark.parametrize("kind, device, compiled", [("acc", "npu", True), ("perf", "cpu", False),
                                                     ("acc", "npu", False)])
def test_modelzoo_result_block_and_case_log(tmp_path, capsys, kind, device, compiled):
    from effnet.launch import modelzoo_result
    log = tmp_path / "train_0.log"
    log.write_text("\n".join([
        "I1201 device: device=%s precision=fp32 iterations_per_loop=1 rank=0/2 mode=train" % device,
        "I1201 step 1/3 loss 2.5000 lr 0.1",
        "I1201 step 2/3 loss 2.2500 lr 0.1",
        COMPILED_LINE if compiled else "",
        "I1201 step 3/3 loss 2.0000 lr 0.1",
        "Final Performance images/sec : 99.5",
        "Final Performance images/sec : 100.0",
        "Top-1 acc: 0.1234"]) + "\n")
    result = modelzoo_result.report(str(log), kind, 2, 16, 42, str(tmp_path), "train_full_8p.sh")
    out = capsys.readouterr().out.splitlines()
    case_name = "%s_bs16_2p_%s" % (NETWORK, kind)
    assert result == str(tmp_path / (case_name + ".log"))
    case = read_case_log(result)
    assert case["ActualFPS"] == "100.0" and case["TrainingTime"] == "320.00"  # 16 x 2 x 1000 / 100
    assert case["ActualLoss"] == "2.0000" and case["E2ETrainingTime"] == "42" and case["RankSize"] == "2"
    assert ("TrainAccuracy" in case) == (kind == "acc") and case.get("TrainAccuracy", "0.1234") == "0.1234"
    assert (tmp_path / (case_name + "_loss.txt")).read_text().split() == ["2.5000", "2.2500", "2.0000"]
    block = out[out.index("------------------ Final result ------------------") + 1:]
    assert block[0] == "Final Performance images/sec : 100.0"
    assert block[1] == ("Final Train Accuracy : 0.1234" if kind == "acc" else "E2E Training Duration sec : 42")
    warnings = [line for line in out if line.startswith("[Warning]")]
    if device == "cpu":
        assert warnings == ["[Warning] the model was not compiled on the Ascend AI processor: this run used cpu"]
    else:
        assert len(warnings) == (0 if compiled else 1) and all("the device was npu" in w for w in warnings)


def test_modelzoo_result_without_images_per_second(tmp_path, capsys):
    from effnet.launch import modelzoo_result
    log = tmp_path / "train_0.log"
    log.write_text("I1201 step 1/1 loss 2.5000 lr 0.1\n")
    case = read_case_log(modelzoo_result.report(str(log), "perf", 1, 8, 3, str(tmp_path), "x"))
    assert case["ActualFPS"] == "n/a" and case["TrainingTime"] == "n/a"
    out = capsys.readouterr().out
    assert "[Warning] no images/sec in the log" in out and "this run used an unknown device" in out
