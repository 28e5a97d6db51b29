"""Exports a trained checkpoint to every format users deploy with, each checked against the checkpoint.

Usage:
  python export.py --checkpoint=model/best --data_path=data/mydata [--output_dir=model/best/export]
      [--formats=pb,saved_model,tflite_fp32,tflite_fp16,tflite_int8,onnx] [--weights_variant=auto|ema|raw]
      [--check_images=100] [--calibration_images=100] [--images=photo.jpg,...] [--overwrite]

Writes the frozen graph (.pb), a SavedModel, TFLite float32 / float16 / int8 (full-integer, calibrated on
--calibration_images training images) and ONNX (needs `pip install -r requirements-export.txt`), runs each
file and the checkpoint on --check_images validation images (or the --images photos) and prints one table:
the largest logit difference relative to the largest logit (absolute where the logits stay below 1; float
formats <= 1e-4, float16 <= 1e-2), the top-1 agreement with the checkpoint, and with labels both top-1
accuracies (int8: at most --int8_max_top1_drop below the checkpoint). Then the ATC commands and AIPP config for
the .pb and .onnx.
Every file takes float32 NHWC RGB 0..255 images after the evaluation preprocessing (centre crop of 87.5%,
bicubic resize); the int8 TFLite file takes the same pixels as uint8. Exit code 1 when a check fails (that
file is not written) or the input is bad (nothing is written).
"""
import sys

import tensorflow.compat.v1 as tf
from absl import flags

import preprocess
from effnet import cli
from effnet.checkpoints import checkpoint_reader
from effnet.export import exporter, outputs, runtimes

FLAGS = flags.FLAGS


def define_flags():
    """Defines the CLI flags (only when run as a script, so the module imports without side effects)."""
    flags.DEFINE_string("checkpoint", None, "Checkpoint folder (its newest checkpoint) or checkpoint prefix.")
    flags.DEFINE_string("data_path", None, "Records made by make_tfrecords.py: validation images check the "
                        "exports, training images calibrate int8.")
    flags.DEFINE_string("output_dir", None, "Folder for the exported files; default: <checkpoint dir>/export.")
    flags.DEFINE_list("formats", [], "Formats to write, of %s; default: all whose packages are installed."
                      % ",".join(exporter.FORMATS))
    cli.define_weights_variant("Which weights of the checkpoint to export.")
    flags.DEFINE_integer("image_size", None, "Input size; default: the size the checkpoint was trained at.")
    flags.DEFINE_integer("check_images", 100, "Validation images each export is checked on.")
    flags.DEFINE_integer("calibration_images", 100, "Training images that calibrate the int8 ranges.")
    flags.DEFINE_list("images", [], "Photos to check on instead of validation images (comma separated).")
    flags.DEFINE_float("int8_max_top1_drop", 0.02, "Largest top-1 drop of int8 against the checkpoint on labelled "
                       "check images (0.02 = 2 points).")
    flags.DEFINE_float("int8_min_agreement", 0.9, "Smallest share of check images int8 must name as the "
                       "checkpoint does.")
    flags.DEFINE_bool("overwrite", False, "Replace existing exported files (never a file of the checkpoint).")
    flags.DEFINE_string("soc_version", "Ascend310", "--soc_version printed in the ATC commands.")
    flags.mark_flag_as_required("checkpoint")


ERRORS = (exporter.ExportError, outputs.OutputError, runtimes.ModelFileError, checkpoint_reader.CheckpointError,
          preprocess.DatasetError)


def main(argv):
    del argv  # none: cli.run refuses positional arguments
    tf.logging.set_verbosity(tf.logging.ERROR)
    try:
        result = exporter.export(
            FLAGS.checkpoint, FLAGS.output_dir, FLAGS.formats, cli.weights_variant(), FLAGS.data_path, FLAGS.images,
            FLAGS.check_images, FLAGS.calibration_images, FLAGS.image_size, FLAGS.overwrite,
            FLAGS.int8_max_top1_drop, FLAGS.int8_min_agreement, FLAGS.soc_version)
    except OSError as err:  # e.g. the disk filled up: the file being written was removed
        cli.fail("cannot write the export (%s): free space or pass another --output_dir" % err)
    print("Checked on %s against the checkpoint (%s weights; logit differences relative to the largest logit, "
          "absolute below 1):" % (result.check_source, "EMA" if result.use_ema else "raw"))
    print(exporter.format_table(result))
    for kind, command in sorted(result.atc.items()):
        print("ATC command (%s, uint8 RGB %dx%d frames through the AIPP config beside it):"
              % (kind, result.image_size, result.image_size))
        print(command)
    if result.atc:
        print("AIPP config (the files normalize inside, so AIPP only passes the pixels on):")
        print(exporter.aipp_config(result.image_size), end="")
    failed = [check for check in result.checks if not check.passed]
    for check in failed:
        print("error: %s not written: %s" % (check.path, check.reason), file=sys.stderr)
    return cli.EXIT_ERROR if failed else 0


if __name__ == "__main__":
    cli.run(main, ERRORS, define_flags)
