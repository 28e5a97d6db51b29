"""Evaluates a checkpoint on the validation split and prints Top-1/Top-5 accuracy.

    python test.py --TMP_DATA_PATH=./data/demo --TMP_MODEL_PATH=./model

TMP_MODEL_PATH is a folder (its newest checkpoint) or a checkpoint prefix; checkpoints written by
train.py and the official ones both work, and so do the files export.py writes (.pb, SavedModel folder,
.tflite, .onnx). Every validation image is counted exactly once.
"""
import preprocess
from effnet import cli, common_flags
from effnet.checkpoints import checkpoint_reader, run_config
from effnet.devices import device
from effnet.evaluation import evaluation
from effnet.export import runtimes

ERRORS = (preprocess.DatasetError, checkpoint_reader.CheckpointError, device.DeviceError, run_config.RunConfigError,
          common_flags.FlagError, runtimes.ModelFileError)


def main(argv):
    del argv  # none: cli.run refuses positional arguments
    evaluation.main_from_flags()


if __name__ == "__main__":
    cli.run(main, ERRORS, evaluation.define_flags)
