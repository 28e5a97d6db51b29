"""The end of a ModelZoo test-script run: reads the training log, prints the "Final result" block and
writes ${CaseName}.log and ${CaseName}_loss.txt, the files the ModelZoo tooling collects.

  python -m effnet.launch.modelzoo_result --log_file=LOG --kind=acc|perf --rank_size=N --batch_size=N
      --e2e_seconds=S --output_path=DIR --script=NAME
"""
import os
import platform
import re

from absl import flags

from effnet import cli

NETWORK = "EfficientNet_for_TensorFlow"
COMPILED_LINE = "The model has been compiled on the Ascend AI processor"
FPS_LABEL = "Final Performance images/sec :"
# The accuracy run reports the evaluation's top-1 (train.py's "Final Train Accuracy" is on training batches).
ACCURACY_LABEL = "Top-1 acc:"
_LOSS = re.compile(r" step \d+/\d+ loss (\S+)")
_DEVICE = re.compile(r"device: device=([a-z]+)")
_NUMBER = re.compile(r"^\d+(\.\d+)?$")

FLAGS = flags.FLAGS


def define_flags():
    """Defines the flags (only when run as a script)."""
    flags.DEFINE_string("log_file", None, "The run's training (and evaluation) log.")
    flags.DEFINE_enum("kind", None, ("acc", "perf"), "The run's kind.")
    flags.DEFINE_integer("rank_size", 1, "Devices of the run.")
    flags.DEFINE_integer("batch_size", None, "Images per step and device.")
    flags.DEFINE_integer("e2e_seconds", None, "Wall time of the training, in seconds.")
    flags.DEFINE_string("output_path", None, "Folder for ${CaseName}.log and ${CaseName}_loss.txt.")
    flags.DEFINE_string("script", "modelzoo_test", "The test script's name, for the log lines.")
    for name in ("log_file", "kind", "batch_size", "e2e_seconds", "output_path"):
        flags.mark_flag_as_required(name)


def _last_value(lines, label):
    """The last word of the last line holding `label`, or '' when none does."""
    found = [line for line in lines if label in line]
    return found[-1].split()[-1] if found else ""


def read_log(text):
    """What the result block needs from a log: fps, accuracy, losses, device and whether the adapter
    said it compiled the model on the Ascend AI processor."""
    lines = text.splitlines()
    device = _DEVICE.search(text)
    return {"fps": _last_value(lines, FPS_LABEL), "accuracy": _last_value(lines, ACCURACY_LABEL),
            "losses": _LOSS.findall(text), "device": device.group(1) if device else "",
            "compiled": COMPILED_LINE in text}


def case_name(kind, rank_size, batch_size):
    return "%s_bs%d_%dp_%s" % (NETWORK, batch_size, rank_size, kind)


def report(log_file, kind, rank_size, batch_size, e2e_seconds, output_path, script):
    """Prints the warnings and the result block, writes the case files; returns the case log's path."""
    with open(log_file) as handle:
        found = read_log(handle.read())
    name = case_name(kind, rank_size, batch_size)
    with open(os.path.join(output_path, name + "_loss.txt"), "w") as handle:
        handle.write("".join(loss + "\n" for loss in found["losses"]))
    fps = found["fps"]
    if _NUMBER.match(fps) and float(fps) > 0:
        training_time = "%.2f" % (batch_size * rank_size * 1000 / float(fps))
    else:
        print("[Warning] no images/sec in the log: train for more steps (the first log interval is not timed)")
        fps = training_time = "n/a"
    print("[%s] device: %s" % (script, found["device"] or "unknown"))
    # The newer ModelZoo scripts look for the adapter's compile line; a missing one is a warning, never a failure.
    if found["device"] != "npu":
        print("[Warning] the model was not compiled on the Ascend AI processor: this run used %s"
              % (found["device"] or "an unknown device"))
    elif not found["compiled"]:
        print('[Warning] the device was npu but %s lacks "%s": check that the graph ran on the NPU '
              "(TF_CPP_MIN_LOG_LEVEL above 0 also hides that line)" % (log_file, COMPILED_LINE))
    print("------------------ Final result ------------------")
    print("%s %s" % (FPS_LABEL, fps))
    if kind == "acc":
        print("Final Train Accuracy : %s" % found["accuracy"])
    print("E2E Training Duration sec : %d" % e2e_seconds)
    entries = [("Network", NETWORK), ("RankSize", rank_size), ("BatchSize", batch_size),
               ("DeviceType", platform.machine()), ("CaseName", name), ("ActualFPS", fps),
               ("TrainingTime", training_time)]
    entries += [("TrainAccuracy", found["accuracy"])] if kind == "acc" else []
    entries += [("ActualLoss", found["losses"][-1] if found["losses"] else ""), ("E2ETrainingTime", e2e_seconds)]
    result_file = os.path.join(output_path, name + ".log")
    with open(result_file, "w") as handle:
        handle.write("".join("%s = %s\n" % entry for entry in entries))
    print("[%s] results in %s" % (script, result_file))
    return result_file


def main(argv):
    del argv  # none: cli.run refuses positional arguments
    report(FLAGS.log_file, FLAGS.kind, FLAGS.rank_size, FLAGS.batch_size, FLAGS.e2e_seconds, FLAGS.output_path,
           FLAGS.script)


if __name__ == "__main__":
    cli.run(main, define_flags=define_flags)
