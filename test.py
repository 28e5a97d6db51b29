"""Evaluates a checkpoint on the validation split and prints Top-1/Top-5 accuracy.

    python test.py --TMP_DATA_PATH=./data/demo --TMP_MODEL_PATH=./model

TMP_MODEL_PATH is a folder (its newest checkpoint) or a checkpoint prefix; checkpoints written by
train.py and the official ones both work, and so do the files export.py writes (.pb, SavedModel folder,
.tflite, .onnx). Every validation image is counted exactly once.
"""
import sys

from absl import app

import preprocess
from effnet import common_flags
from effnet.checkpoints import checkpoint_reader, run_config
from effnet.devices import device
from effnet.evaluation import evaluation
from effnet.export import runtimes


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    try:
        evaluation.main_from_flags()
    except (preprocess.DatasetError, checkpoint_reader.CheckpointError, device.DeviceError,
            run_config.RunConfigError, common_flags.FlagError, runtimes.ModelFileError) as error:
        sys.exit("error: %s" % error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
