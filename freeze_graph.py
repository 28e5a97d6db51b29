"""Freezes an EfficientNet checkpoint into a .pb for offline inference (ATC on Ascend 310).

Usage:
  python freeze_graph.py --checkpoint=model/ [--weights_variant=auto|ema|raw] [--input_dtype=uint8]
      [--nonormalize] [--batch_size=1] [--output=model/efficientnet-b0.pb] [--overwrite]

The frozen graph takes `input` (NHWC, batch_size x S x S x 3, RGB 0..255 unless --nonormalize)
and returns `logits` and `probs` (softmax). With --nonormalize the mean/std normalization is left
to the ATC AIPP stage; the AIPP values are printed and written next to the .pb.
--weights_variant: auto (default) restores the ExponentialMovingAverage shadows when the checkpoint
has them, ema requires them, raw restores the raw weights (--use_ema=auto|true|false is its deprecated name).
An existing .pb or AIPP file is replaced only with --overwrite, a file of the checkpoint never; the files are
written under a temporary name and renamed when complete.
"""
import collections
import os
import shlex

import tensorflow.compat.v1 as tf
from absl import flags

import efficientnet_builder
from effnet import cli, tf_compat
from effnet.checkpoints import checkpoint_reader
from effnet.export import outputs

FLAGS = flags.FLAGS
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "probs")
INPUT_DTYPES = {"float32": tf.float32, "uint8": tf.uint8}

FreezeResult = collections.namedtuple(
    "FreezeResult", "output model_name num_classes image_size batch_size use_ema normalize "
                    "input_dtype atc_command aipp_config aipp_path")


def define_flags():
    """Defines the CLI flags (only when run as a script, so the module imports without side effects)."""
    flags.DEFINE_string("checkpoint", None, "Checkpoint folder (its newest checkpoint) or checkpoint prefix.")
    flags.DEFINE_enum("model_name", None, efficientnet_builder.MODEL_NAMES,
                      "Model to build; default: the model the checkpoint holds.")
    flags.DEFINE_integer("num_classes", None,
                         "Classes of the head; default: from the checkpoint's head/dense/bias.")
    flags.DEFINE_integer("image_size", None, "Input height and width; default: the size the checkpoint was trained at "
                         "(run_config.json), else the model's resolution.")
    flags.DEFINE_string("output", None, "Output .pb path; default: <checkpoint dir>/<model_name>.pb.")
    cli.define_weights_variant("Which weights of the checkpoint to freeze.")
    flags.DEFINE_enum("input_dtype", "float32", sorted(INPUT_DTYPES),
                      "Dtype of the `input` placeholder; uint8 is cast to float inside the graph.")
    flags.DEFINE_bool("normalize", True,
                      "Normalize (mean/std) inside the graph; --nonormalize leaves it to an ATC AIPP config.")
    flags.DEFINE_integer("batch_size", 1, "Static batch size of `input`; 0 or -1 = dynamic (None).")
    flags.DEFINE_string("soc_version", "Ascend310", "--soc_version printed in the ATC command.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing output file (never a file of the checkpoint).")
    flags.mark_flag_as_required("checkpoint")


def _named(tensor, name):
    """Returns tensor under the exact node name `name`, failing loudly on a name clash."""
    if tensor.op.name == name:
        return tensor
    named = tf.identity(tensor, name=name)
    if named.op.name != name:
        raise RuntimeError("cannot name output %r: the graph already has a node of that name" % name)
    return named


def plain_swish(x):
    """x * sigmoid(x) as two plain ops: tf.nn.swish's custom gradient leaves an IdentityN node that the TFLite
    converter, tf2onnx and ATC do not take, and inference needs no gradient."""
    return x * tf_compat.sigmoid(x)


def build_inference_graph(model_name, num_classes, image_size, batch_size=1, input_dtype="float32",
                          normalize=True):
    """Builds `input` -> model -> `logits`, `probs` in the default graph; returns the three tensors.

    Image values are RGB 0..255 when normalize, else already normalized (AIPP does it on the NPU).
    """
    if input_dtype not in INPUT_DTYPES:
        raise ValueError("input_dtype must be one of %s, got %r"
                         % ("|".join(sorted(INPUT_DTYPES)), input_dtype))
    batch = batch_size if batch_size and batch_size > 0 else None
    images = tf.placeholder(INPUT_DTYPES[input_dtype], [batch, image_size, image_size, 3], name=INPUT_NAME)
    features = tf.cast(images, tf.float32)
    if normalize:
        with tf.name_scope("normalize"):
            features = efficientnet_builder.normalize_images(features, model_name)
    override_params = {"num_classes": num_classes}
    if not efficientnet_builder.is_lite(model_name):
        override_params["relu_fn"] = plain_swish
    logits, _ = efficientnet_builder.build_model(features, model_name, training=False,
                                                 override_params=override_params)
    logits = _named(logits, OUTPUT_NAMES[0])
    probs = _named(tf.nn.softmax(logits), OUTPUT_NAMES[1])
    return images, logits, probs


def aipp_config(model_name, image_size):
    """AIPP static config folding the model's mean/std into the NPU's image pre-processing.

    AIPP computes (pixel - mean_chn - min_chn) * var_reci_chn with an integer mean_chn, so each
    mean is split into its integer part and the fractional rest.
    """
    mean_rgb, stddev_rgb = efficientnet_builder.normalization_constants(model_name)
    lines = ["aipp_op {", "    aipp_mode: static", "    input_format: RGB888_U8",
             "    src_image_size_w: %d" % image_size, "    src_image_size_h: %d" % image_size,
             "    csc_switch: false"]
    for index, mean in enumerate(mean_rgb):
        lines.append("    mean_chn_%d: %d" % (index, int(mean)))
    for index, mean in enumerate(mean_rgb):
        lines.append("    min_chn_%d: %s" % (index, _number(mean - int(mean))))
    for index, std in enumerate(stddev_rgb):
        lines.append("    var_reci_chn_%d: %s" % (index, _number(1.0 / std)))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _number(value):
    """Short decimal text for a float (no binary noise such as 0.6749999999)."""
    return "%.10g" % round(value, 10)


def atc_command(pb_path, image_size, batch_size, soc_version="Ascend310", aipp_path=None):
    """The ATC command line that converts the frozen graph to an offline model (.om)."""
    batch = batch_size if batch_size and batch_size > 0 else -1
    parts = ["atc", "--model=%s" % shlex.quote(pb_path), "--framework=3",
             "--output=%s" % shlex.quote(os.path.splitext(pb_path)[0]), "--soc_version=%s" % soc_version,
             '--input_shape="%s:%d,%d,%d,3"' % (INPUT_NAME, batch, image_size, image_size),
             "--input_format=NHWC", '--out_nodes="%s"' % ";".join(n + ":0" for n in OUTPUT_NAMES),
             "--output_type=FP32"]
    if batch < 0:
        parts.append('--dynamic_batch_size="1,2,4,8,16,32"')
    if aipp_path:
        parts.append("--insert_op_conf=%s" % shlex.quote(aipp_path))
    return " ".join(parts)


def freeze(checkpoint, model_name=None, num_classes=None, image_size=None, output=None, use_ema="auto",
           input_dtype="float32", normalize=True, batch_size=1, soc_version="Ascend310", overwrite=False):
    """Restores a checkpoint into the inference graph and writes it as a frozen .pb; returns FreezeResult.

    Raises outputs.OutputError, before anything is built, when the .pb or AIPP file would replace a file
    of the checkpoint, or an existing file without overwrite."""
    prefix = checkpoint_reader.resolve_checkpoint(checkpoint)
    model_name, num_classes, image_size = checkpoint_reader.infer_model(prefix, model_name, num_classes, image_size)
    use_ema = checkpoint_reader.resolve_use_ema(use_ema, prefix)
    output = output or os.path.join(os.path.dirname(prefix), model_name + ".pb")
    aipp_path = None if normalize else os.path.splitext(output)[0] + "_aipp.cfg"
    inputs = outputs.checkpoint_inputs(prefix)
    outputs.check_output(output, inputs, overwrite)
    if aipp_path:
        outputs.check_output(aipp_path, inputs + [output], overwrite, flag="--output")
    batch_size = batch_size if batch_size and batch_size > 0 else None
    graph = tf.Graph()
    with graph.as_default():
        build_inference_graph(model_name, num_classes, image_size, batch_size, input_dtype, normalize)
        with tf.Session(graph=graph) as sess:
            checkpoint_reader.restore(sess, prefix, tf.global_variables(), use_ema)
            frozen = tf.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), list(OUTPUT_NAMES))
    with outputs.written_atomically(output, overwrite) as temporary:
        with open(temporary, "wb") as out:
            out.write(frozen.SerializeToString())
    aipp_text = None
    if aipp_path:
        aipp_text = aipp_config(model_name, image_size)
        with outputs.written_atomically(aipp_path, overwrite) as temporary:
            with open(temporary, "w") as out:
                out.write(aipp_text)
    command = atc_command(output, image_size, batch_size, soc_version, aipp_path)
    return FreezeResult(output, model_name, num_classes, image_size, batch_size, use_ema, normalize,
                        input_dtype, command, aipp_text, aipp_path)


def main(argv):
    del argv  # none: cli.run refuses positional arguments
    result = freeze(FLAGS.checkpoint, FLAGS.model_name, FLAGS.num_classes, FLAGS.image_size, FLAGS.output,
                    cli.weights_variant(), FLAGS.input_dtype, FLAGS.normalize, FLAGS.batch_size,
                    FLAGS.soc_version, FLAGS.overwrite)
    print("wrote %s (%s, %d classes, input %s %s x %d x %d x 3, %s weights, normalization %s)" % (
        result.output, result.model_name, result.num_classes, result.input_dtype,
        result.batch_size or "None", result.image_size, result.image_size,
        "EMA" if result.use_ema else "raw", "in graph" if result.normalize else "left to AIPP"))
    print("outputs: logits:0, probs:0")
    if result.aipp_config:
        print("AIPP config (%s), mean = mean_chn + min_chn, var_reci_chn = 1/std:" % result.aipp_path)
        print(result.aipp_config, end="")
    print("ATC command:")
    print(result.atc_command)


if __name__ == "__main__":
    cli.run(main, (ValueError, IOError, tf.errors.OpError), define_flags)
