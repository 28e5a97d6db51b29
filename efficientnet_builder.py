"""EfficientNet model table, block-string grammar and the `build_model` entry points.

Function names and meanings follow the official builder, so code written against it works
unchanged, and variable names follow the official checkpoint layout, so Google's pretrained
checkpoints restore without a name map.
"""
import collections
import json
import os
import re

import tensorflow.compat.v1 as tf

import efficientnet_model
from effnet import tf_compat

ModelSpec = collections.namedtuple("ModelSpec", ["width", "depth", "resolution", "dropout"])

_MODEL_SPECS = collections.OrderedDict([
    ("efficientnet-b0", ModelSpec(1.0, 1.0, 224, 0.2)),
    ("efficientnet-b1", ModelSpec(1.0, 1.1, 240, 0.2)),
    ("efficientnet-b2", ModelSpec(1.1, 1.2, 260, 0.3)),
    ("efficientnet-b3", ModelSpec(1.2, 1.4, 300, 0.3)),
    ("efficientnet-b4", ModelSpec(1.4, 1.8, 380, 0.4)),
    ("efficientnet-b5", ModelSpec(1.6, 2.2, 456, 0.4)),
    ("efficientnet-b6", ModelSpec(1.8, 2.6, 528, 0.5)),
    ("efficientnet-b7", ModelSpec(2.0, 3.1, 600, 0.5)),
    ("efficientnet-lite0", ModelSpec(1.0, 1.0, 224, 0.2)),
    ("efficientnet-lite1", ModelSpec(1.0, 1.1, 240, 0.2)),
    ("efficientnet-lite2", ModelSpec(1.1, 1.2, 260, 0.3)),
    ("efficientnet-lite3", ModelSpec(1.2, 1.4, 280, 0.3)),
    ("efficientnet-lite4", ModelSpec(1.4, 1.8, 300, 0.3)),
])
MODEL_NAMES = tuple(_MODEL_SPECS)

# Shared by the B-series and lite models.
DEFAULT_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)

# ImageNet statistics on the 0..255 scale (B-series); lite models use 127/128.
MEAN_RGB = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STDDEV_RGB = [0.229 * 255, 0.224 * 255, 0.225 * 255]
LITE_MEAN_RGB = [127.0, 127.0, 127.0]
LITE_STDDEV_RGB = [128.0, 128.0, 128.0]

GlobalParams = efficientnet_model.GlobalParams
BlockArgs = efficientnet_model.BlockArgs
round_filters = efficientnet_model.round_filters
round_repeats = efficientnet_model.round_repeats
survival_probabilities = efficientnet_model.survival_probabilities


def model_spec(model_name):
    """(width, depth, resolution, dropout) of a model; ValueError naming the valid models."""
    if model_name not in _MODEL_SPECS:
        raise ValueError("unknown model_name %r; valid names: %s" % (model_name, ", ".join(MODEL_NAMES)))
    return _MODEL_SPECS[model_name]


def is_lite(model_name):
    model_spec(model_name)
    return "lite" in model_name


def normalization_constants(model_name):
    """(mean_rgb, stddev_rgb) on the 0..255 scale used by `normalize_images`."""
    if is_lite(model_name):
        return list(LITE_MEAN_RGB), list(LITE_STDDEV_RGB)
    return list(MEAN_RGB), list(STDDEV_RGB)


def normalize_images(images, model_name):
    """Maps 0..255 RGB images to the input range the model family was trained with."""
    mean_rgb, stddev_rgb = normalization_constants(model_name)
    # No in-place `-=`: on TF 2.x that would assign to a float32 tf.Variable passed as `images`.
    images = tf.cast(images, tf.float32)
    mean = tf.constant(mean_rgb, shape=[1, 1, 3], dtype=tf.float32)
    stddev = tf.constant(stddev_rgb, shape=[1, 1, 3], dtype=tf.float32)
    return (images - mean) / stddev


def decode_block_string(block_string):
    """Parses one block string such as 'r2_k3_s22_e6_i16_o24_se0.25' into BlockArgs."""
    if not isinstance(block_string, str) or not block_string:
        raise ValueError("block string must be a non-empty string, got %r" % (block_string,))
    options = {}
    for token in block_string.split("_"):
        parts = re.split(r"(\d.*)", token)
        if len(parts) >= 2:
            options[parts[0]] = parts[1]
    strides = options.get("s", "")
    if len(strides) != 2 or not strides.isdigit():
        raise ValueError("block string %r needs strides as two digits, e.g. s11 or s22" % block_string)
    for key in ("r", "k", "e", "i", "o"):
        if key not in options:
            raise ValueError("block string %r lacks the '%s' field" % (block_string, key))
    return BlockArgs(
        kernel_size=int(options["k"]),
        num_repeat=int(options["r"]),
        input_filters=int(options["i"]),
        output_filters=int(options["o"]),
        expand_ratio=int(options["e"]),
        id_skip="noskip" not in block_string,
        se_ratio=float(options["se"]) if "se" in options else None,
        strides=[int(strides[0]), int(strides[1])],
        conv_type=int(options.get("c", "0")),
        fused_conv=int(options.get("f", "0")),
        space2depth=int(options.get("d", "0")),
        condconv="cc" in block_string,
        activation=int(options["a"]) if "a" in options else None,
    )


def encode_block_string(block):
    """The inverse of `decode_block_string`."""
    parts = [
        "r%d" % block.num_repeat,
        "k%d" % block.kernel_size,
        "s%d%d" % (block.strides[0], block.strides[1]),
        "e%s" % block.expand_ratio,
        "i%d" % block.input_filters,
        "o%d" % block.output_filters,
    ]
    if block.se_ratio is not None and 0 < block.se_ratio <= 1:
        parts.append("se%s" % block.se_ratio)
    if block.conv_type:
        parts.append("c%d" % block.conv_type)
    if block.fused_conv:
        parts.append("f%d" % block.fused_conv)
    if block.space2depth:
        parts.append("d%d" % block.space2depth)
    if block.activation is not None:
        parts.append("a%d" % block.activation)
    if not block.id_skip:
        parts.append("noskip")
    if block.condconv:
        parts.append("cc")
    return "_".join(parts)


def decode_blocks(block_strings):
    return [decode_block_string(s) for s in block_strings]


def encode_blocks(blocks_args):
    return [encode_block_string(b) for b in blocks_args]


def get_model_params(model_name, override_params=None):
    """(blocks_args, global_params) for a model, with `override_params` applied."""
    spec = model_spec(model_name)
    lite = is_lite(model_name)
    global_params = GlobalParams(
        batch_norm_momentum=0.99,
        batch_norm_epsilon=1e-3,
        dropout_rate=spec.dropout,
        data_format="channels_last",
        num_classes=1000,
        width_coefficient=spec.width,
        depth_coefficient=spec.depth,
        depth_divisor=8,
        min_depth=None,
        survival_prob=0.8,
        relu_fn=tf.nn.relu6 if lite else tf_compat.swish,
        use_se=not lite,
        local_pooling=lite,
        fix_head_stem=lite,
        clip_projection_output=False,
        dropout_fn=None,
    )
    if override_params:
        override_params = dict(override_params)
        if override_params.get("drop_connect_rate"):
            override_params["survival_prob"] = 1.0 - override_params["drop_connect_rate"]
        override_params.pop("drop_connect_rate", None)
        unknown = sorted(set(override_params) - set(GlobalParams._fields))
        if unknown:
            raise ValueError("unknown override_params %s; valid keys: %s"
                             % (unknown, ", ".join(GlobalParams._fields)))
        global_params = global_params._replace(**override_params)
    if not global_params.num_classes or global_params.num_classes < 1:
        raise ValueError("num_classes must be a positive integer, got %r" % (global_params.num_classes,))
    if global_params.data_format != "channels_last":
        raise ValueError("only data_format='channels_last' (NHWC) is supported")
    return decode_blocks(DEFAULT_BLOCKS), global_params


def scaled_blocks(blocks_args, global_params):
    """Per-stage BlockArgs after width/depth scaling (lite keeps the first and last stage depth)."""
    scaled = []
    last = len(blocks_args) - 1
    for index, block in enumerate(blocks_args):
        keep_depth = global_params.fix_head_stem and index in (0, last)
        scaled.append(block._replace(
            input_filters=round_filters(block.input_filters, global_params),
            output_filters=round_filters(block.output_filters, global_params),
            num_repeat=round_repeats(block.num_repeat, global_params, skip=keep_depth)))
    return scaled


def _write_params(model_dir, model_name, blocks_args, global_params):
    """Records the model configuration next to checkpoints, as the official builder does."""
    tf.gfile.MakeDirs(model_dir)
    description = {
        "model_name": model_name,
        "blocks_args": encode_blocks(blocks_args),
        "global_params": {k: v for k, v in global_params._asdict().items() if not callable(v)},
    }
    with tf.gfile.GFile(os.path.join(model_dir, "model_params.txt"), "w") as out:
        out.write(json.dumps(description, indent=2, sort_keys=True) + "\n")


def _build(images, model_name, training, override_params, model_dir, features_only, pooled_features_only):
    if not isinstance(images, tf.Tensor):
        raise ValueError("images must be a tf.Tensor, got %s" % type(images).__name__)
    blocks_args, global_params = get_model_params(model_name, override_params)
    if model_dir:
        _write_params(model_dir, model_name, blocks_args, global_params)
    with tf.variable_scope(model_name):
        model = efficientnet_model.Model(scaled_blocks(blocks_args, global_params), global_params)
        outputs = model(images, training=training, features_only=features_only,
                        pooled_features_only=pooled_features_only)
    return outputs, model.endpoints


def build_model(images, model_name, training, override_params=None, model_dir=None,
                fine_tuning=False, features_only=False, pooled_features_only=False):
    """Builds the classifier on normalized NHWC images; returns (logits, endpoints).

    `fine_tuning` is accepted for compatibility with the official signature: this
    implementation's batch norm and activations are already the same in both modes.
    """
    del fine_tuning
    outputs, endpoints = _build(images, model_name, training, override_params, model_dir,
                                features_only, pooled_features_only)
    if features_only:
        name = "features"
    elif pooled_features_only:
        name = "pooled_features"
    else:
        name = "logits"
    return tf.identity(outputs, name), endpoints


def build_model_base(images, model_name, training, override_params=None):
    """Builds the network up to the last block, for transfer learning; returns (features, endpoints)."""
    features, endpoints = _build(images, model_name, training, override_params, None, True, False)
    return tf.identity(features, "features"), endpoints
