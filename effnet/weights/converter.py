"""Foreign EfficientNet weights (Keras .h5, PyTorch .pth, timm .safetensors) mapped onto the official
variable names and written as a checkpoint with its run record; convert_weights.py is the command line.

Sources are told apart by their tensor names. They all pad like TensorFlow's "SAME", so the converted
model gives the source's logits; weights trained with PyTorch's symmetric padding (timm efficientnet_*
without tf_, torchvision) do not, and are refused. The checkpoint holds the raw weights only.
"""
import collections
import functools
import os
import re

import numpy as np

import efficientnet_builder
from effnet.checkpoints import checkpoint_reader, run_config
from effnet.weights import weight_readers


class WeightsConversionError(ValueError):
    """Weights that cannot be converted; the message names what is wrong and the fix."""


# One canonical layer = the arrays of one conv / batch norm / dense in TensorFlow layout.
Stem = collections.namedtuple("Stem", "conv bn")
Block = collections.namedtuple("Block", "expand_conv expand_bn depthwise depthwise_bn se_reduce se_expand "
                                        "project project_bn")
Head = collections.namedtuple("Head", "conv bn dense_kernel dense_bias")
Network = collections.namedtuple("Network", "source stem blocks head")

_TIMM_MODEL = re.compile(r"(tf_)?efficientnet_(b\d|l2|lite\d)")


def _hwio_from_torch(kernel):
    """PyTorch conv kernel [out, in, h, w] -> TensorFlow [h, w, in, out]."""
    return kernel.transpose(2, 3, 1, 0)


def _depthwise_from_torch(kernel):
    """PyTorch depthwise kernel [channels, 1, h, w] -> TensorFlow [h, w, channels, 1]."""
    return kernel.transpose(2, 3, 0, 1)


class _Tensors(object):
    """The source's tensors; records which ones were taken, so leftovers can be reported."""

    def __init__(self, tensors, path):
        self.tensors = tensors
        self.path = path
        self.taken = set()

    def has(self, name):
        return name in self.tensors

    def take(self, name, ndim=1):
        """The tensor as float32; an error when it is missing or has another number of dimensions."""
        if name not in self.tensors:
            raise WeightsConversionError("%s lacks tensor %s: pass the complete weights file of the model"
                                         % (self.path, name))
        value = np.asarray(self.tensors[name], dtype=np.float32)
        if value.ndim != ndim:
            raise WeightsConversionError("%s: tensor %s has shape %s where an EfficientNet has a %d-D tensor: pass the "
                                  "weights of an unmodified EfficientNet" % (self.path, name, list(value.shape), ndim))
        self.taken.add(name)
        return value

    def ignore(self, names):
        self.taken.update(n for n in names if n in self.tensors)

    def check_all_taken(self, source):
        left = sorted(set(self.tensors) - self.taken)
        if left:
            raise WeightsConversionError(
                "%s has %d tensors that a %s EfficientNet does not have (%s): pass the weights of a plain "
                "EfficientNet classifier" % (self.path, len(left), source, checkpoint_reader.listed(left, 5)))


# ---------------------------------------------------------------- PyTorch: efficientnet_pytorch / lite


def _torch_bn(tensors, prefix):
    return tuple(tensors.take(prefix + suffix) for suffix in ("weight", "bias", "running_mean", "running_var"))


def _torch_se(tensors, prefix):
    if not tensors.has(prefix + ".weight"):
        return None
    return _hwio_from_torch(tensors.take(prefix + ".weight", 4)), tensors.take(prefix + ".bias")


def _parse_efficientnet_pytorch(tensors):
    indices = sorted({int(m.group(1)) for m in (re.match(r"_blocks\.(\d+)\.", n) for n in tensors.tensors) if m})
    blocks = []
    for index in indices:
        p = "_blocks.%d." % index
        expand = tensors.has(p + "_expand_conv.weight")
        blocks.append(Block(
            _hwio_from_torch(tensors.take(p + "_expand_conv.weight", 4)) if expand else None,
            _torch_bn(tensors, p + "_bn0.") if expand else None,
            _depthwise_from_torch(tensors.take(p + "_depthwise_conv.weight", 4)), _torch_bn(tensors, p + "_bn1."),
            _torch_se(tensors, p + "_se_reduce"), _torch_se(tensors, p + "_se_expand"),
            _hwio_from_torch(tensors.take(p + "_project_conv.weight", 4)), _torch_bn(tensors, p + "_bn2.")))
    stem = Stem(_hwio_from_torch(tensors.take("_conv_stem.weight", 4)), _torch_bn(tensors, "_bn0."))
    head = Head(_hwio_from_torch(tensors.take("_conv_head.weight", 4)), _torch_bn(tensors, "_bn1."),
                tensors.take("_fc.weight", 2).T, tensors.take("_fc.bias"))
    tensors.ignore([n for n in tensors.tensors if n.endswith("num_batches_tracked")])
    return Network("efficientnet_pytorch", stem, blocks, head)


# ---------------------------------------------------------------- timm


def _parse_timm(tensors):
    positions = sorted({(int(m.group(1)), int(m.group(2)))
                        for m in (re.match(r"blocks\.(\d+)\.(\d+)\.", n) for n in tensors.tensors) if m})
    blocks = []
    for stage, index in positions:
        p = "blocks.%d.%d." % (stage, index)
        if tensors.has(p + "conv_pwl.weight"):  # inverted residual: expand, depthwise, project
            expand_conv = _hwio_from_torch(tensors.take(p + "conv_pw.weight", 4))
            expand_bn = _torch_bn(tensors, p + "bn1.")
            depthwise_bn, project, project_bn = _torch_bn(tensors, p + "bn2."), "conv_pwl.weight", "bn3."
        else:  # depthwise separable: depthwise, project
            expand_conv = expand_bn = None
            depthwise_bn, project, project_bn = _torch_bn(tensors, p + "bn1."), "conv_pw.weight", "bn2."
        blocks.append(Block(
            expand_conv, expand_bn, _depthwise_from_torch(tensors.take(p + "conv_dw.weight", 4)), depthwise_bn,
            _torch_se(tensors, p + "se.conv_reduce"), _torch_se(tensors, p + "se.conv_expand"),
            _hwio_from_torch(tensors.take(p + project, 4)), _torch_bn(tensors, p + project_bn)))
    stem = Stem(_hwio_from_torch(tensors.take("conv_stem.weight", 4)), _torch_bn(tensors, "bn1."))
    head = Head(_hwio_from_torch(tensors.take("conv_head.weight", 4)), _torch_bn(tensors, "bn2."),
                tensors.take("classifier.weight", 2).T, tensors.take("classifier.bias"))
    tensors.ignore([n for n in tensors.tensors if n.endswith("num_batches_tracked")])
    return Network("timm", stem, blocks, head)


def _timm_model_name(timm_model, path):
    """The timm model the weights belong to: --timm_model, else a name in the file's path (hub folders
    are named after it, e.g. models--timm--tf_efficientnet_b0.ns_jft_in1k)."""
    name = timm_model
    if not name:
        found = _TIMM_MODEL.findall(os.path.abspath(path).replace("-", "_"))
        candidates = {"%sefficientnet_%s" % match for match in found}
        if len(candidates) == 1:
            name = candidates.pop()
    if not name:
        raise WeightsConversionError(
            "%s has timm tensor names, which tf_efficientnet_* (TensorFlow padding, convertible) and "
            "efficientnet_* (PyTorch padding, not convertible) share: pass --timm_model=<the timm model name, "
            "e.g. tf_efficientnet_b0>" % path)
    if not _TIMM_MODEL.match(name):
        raise WeightsConversionError("--timm_model=%s is not a timm EfficientNet name: pass e.g. tf_efficientnet_b0 or "
                              "tf_efficientnet_lite0" % name)
    return name


def _refuse_symmetric_padding(source, path):
    raise WeightsConversionError(
        "%s holds %s weights, trained with PyTorch's symmetric padding (and batch-norm epsilon 1e-5); this "
        "package's TensorFlow 'SAME' network gives other logits with them: use the tf_efficientnet_* "
        "weights of the same model (exact ports of Google's)" % (path, source))


# ---------------------------------------------------------------- Keras (applications and qubvel)

_KERAS_BLOCK = re.compile(r"block(\d+)([a-z]+)_")


def _keras_bn(tensors, layer):
    return tuple(tensors.take("%s/%s" % (layer, w)) for w in ("gamma", "beta", "moving_mean", "moving_variance"))


def _keras_conv(tensors, layer, bias=False):
    kernel = tensors.take(layer + "/kernel", 4)
    return (kernel, tensors.take(layer + "/bias")) if bias else kernel


def _parse_keras(tensors):
    positions = sorted({(int(m.group(1)), len(m.group(2)), m.group(2))
                        for m in (_KERAS_BLOCK.match(n) for n in tensors.tensors) if m})
    blocks = []
    for stage, _, letter in positions:
        p = "block%d%s_" % (stage, letter)
        expand = tensors.has(p + "expand_conv/kernel")
        se = tensors.has(p + "se_reduce/kernel")
        blocks.append(Block(
            _keras_conv(tensors, p + "expand_conv") if expand else None,
            _keras_bn(tensors, p + "expand_bn") if expand else None,
            tensors.take(p + "dwconv/depthwise_kernel", 4), _keras_bn(tensors, p + "bn"),
            _keras_conv(tensors, p + "se_reduce", bias=True) if se else None,
            _keras_conv(tensors, p + "se_expand", bias=True) if se else None,
            _keras_conv(tensors, p + "project_conv"), _keras_bn(tensors, p + "project_bn")))
    dense = "predictions" if tensors.has("predictions/kernel") else "probs"
    if not tensors.has(dense + "/kernel"):
        raise WeightsConversionError("%s has no classifier (no predictions/ or probs/ layer): pass the file with the "
                                     "top "
                              "layer (not a '_notop' file)" % tensors.path)
    stem = Stem(_keras_conv(tensors, "stem_conv"), _keras_bn(tensors, "stem_bn"))
    head = Head(_keras_conv(tensors, "top_conv"), _keras_bn(tensors, "top_bn"),
                tensors.take(dense + "/kernel", 2), tensors.take(dense + "/bias"))
    # The input normalization layer of Keras applications holds the ImageNet mean/std that this package
    # applies in its own graph.
    tensors.ignore([n for n in tensors.tensors if n.split("/")[0].startswith("normalization")])
    return Network("Keras applications" if dense == "predictions" else "efficientnet (Keras package)",
                   stem, blocks, head)


# ---------------------------------------------------------------- detection and official names


def parse_network(tensors, path, timm_model=None):
    """The source's layers in TensorFlow layout, whichever naming scheme the file uses."""
    names = set(tensors)
    wrapped = _Tensors(tensors, path)
    if "_conv_stem.weight" in names:
        network = _parse_efficientnet_pytorch(wrapped)
    elif "conv_stem.weight" in names:
        model = _timm_model_name(timm_model, path)
        if not model.startswith("tf_"):
            _refuse_symmetric_padding("timm " + model, path)
        network = _parse_timm(wrapped)._replace(source="timm " + model)
    elif "stem_conv/kernel" in names:
        network = _parse_keras(wrapped)
    elif "features.0.0.weight" in names and "classifier.1.weight" in names:
        _refuse_symmetric_padding("torchvision EfficientNet", path)
    else:
        raise WeightsConversionError(
            "%s does not use a known EfficientNet naming (e.g. %s): supported are Keras applications, the "
            "efficientnet Keras package, efficientnet_pytorch / efficientnet_lite_pytorch and timm "
            "tf_efficientnet_*" % (path, checkpoint_reader.listed(sorted(names), 3)))
    wrapped.check_all_taken(network.source)
    if not network.blocks:
        raise WeightsConversionError("%s has no blocks: pass the weights of a whole EfficientNet" % path)
    return network


def _signature(network):
    """What tells the models apart: block count, stem, last block and head widths, SE or not."""
    return (len(network.blocks), network.stem.conv.shape[-1], network.blocks[-1].project.shape[-1],
            network.head.conv.shape[-1], network.blocks[0].se_reduce is not None)


def _model_signature(model_name):
    blocks_args, params = efficientnet_builder.get_model_params(model_name)
    stages = efficientnet_builder.scaled_blocks(blocks_args, params)
    fixed = params.fix_head_stem
    return (sum(b.num_repeat for b in stages), efficientnet_builder.round_filters(32, params, skip=fixed),
            stages[-1].output_filters, efficientnet_builder.round_filters(1280, params, skip=fixed), params.use_se)


def _describe(signature):
    blocks, stem, last, head, se = signature
    return "%d blocks, stem %d, last block %d, head %d channels, %s" % (
        blocks, stem, last, head, "squeeze-excitation" if se else "no squeeze-excitation")


def detect_model_name(network, model_name=None):
    """The EfficientNet the weights fit; an error when --model_name names another one."""
    held = _signature(network)
    matches = [name for name in efficientnet_builder.MODEL_NAMES if _model_signature(name) == held]
    if model_name:
        efficientnet_builder.model_spec(model_name)
        if model_name in matches:
            return model_name
        raise WeightsConversionError("the weights (%s) are not %s (%s): %s" % (
            _describe(held), model_name, _describe(_model_signature(model_name)),
            "pass --model_name=%s or leave it out" % matches[0] if matches
            else "pass the weights of a supported model"))
    if not matches:
        raise WeightsConversionError("the weights (%s) fit none of %s: pass the weights of one of those models"
                              % (_describe(held), ", ".join(efficientnet_builder.MODEL_NAMES)))
    return matches[0]


def _bn_variables(scope, bn):
    return [("%s/%s" % (scope, name), value)
            for name, value in zip(("gamma", "beta", "moving_mean", "moving_variance"), bn)]


def _numbered_name(base, suffix, index):
    """The official name of a block's index-th conv or batch norm: base, base_1, base_2 ... plus suffix."""
    return "%s%s%s" % (base, "_%d" % index if index else "", suffix)


def official_variables(network, model_name):
    """[(official variable name, array)] in the official creation order. A block's convs and batch norms are
    numbered in the order they are called: conv2d is the expand conv when there is one, else the project
    conv; tpu_batch_normalization(_1, _2) follow expand, depthwise, project."""
    out = [(model_name + "/stem/conv2d/kernel", network.stem.conv)]
    out += _bn_variables(model_name + "/stem/tpu_batch_normalization", network.stem.bn)
    for index, block in enumerate(network.blocks):
        scope = "%s/blocks_%d" % (model_name, index)
        conv = functools.partial(_numbered_name, scope + "/conv2d", "/kernel")
        bn = functools.partial(_numbered_name, scope + "/tpu_batch_normalization", "")
        expanded = 1 if block.expand_conv is not None else 0
        if expanded:
            out.append((conv(0), block.expand_conv))
            out += _bn_variables(bn(0), block.expand_bn)
        out.append((scope + "/depthwise_conv2d/depthwise_kernel", block.depthwise))
        out += _bn_variables(bn(expanded), block.depthwise_bn)
        if block.se_reduce is not None:
            for name, (kernel, bias) in (("se/conv2d", block.se_reduce), ("se/conv2d_1", block.se_expand)):
                out += [("%s/%s/kernel" % (scope, name), kernel), ("%s/%s/bias" % (scope, name), bias)]
        out.append((conv(expanded), block.project))
        out += _bn_variables(bn(expanded + 1), block.project_bn)
    out.append((model_name + "/head/conv2d/kernel", network.head.conv))
    out += _bn_variables(model_name + "/head/tpu_batch_normalization", network.head.bn)
    out += [(model_name + "/head/dense/kernel", network.head.dense_kernel),
            (model_name + "/head/dense/bias", network.head.dense_bias)]
    return out


@functools.lru_cache(maxsize=None)
def model_variable_shapes(model_name, num_classes):
    """{name: shape} of the variables of the model train.py, test.py and predict.py build."""
    import tensorflow.compat.v1 as tf

    with tf.Graph().as_default():
        resolution = efficientnet_builder.model_spec(model_name).resolution
        images = tf.placeholder(tf.float32, [1, resolution, resolution, 3])
        efficientnet_builder.build_model(images, model_name, training=False,
                                         override_params={"num_classes": num_classes})
        return {v.op.name: v.shape.as_list() for v in tf.global_variables()}


def check_variables(variables, model_name, num_classes):
    """An error naming every missing, unknown or misshapen variable, compared with the model's own."""
    expected = model_variable_shapes(model_name, num_classes)
    values = dict(variables)
    missing = sorted(set(expected) - set(values))
    unknown = sorted(set(values) - set(expected))
    mismatched = ["%s (weights %s, model %s)" % (n, list(values[n].shape), expected[n])
                  for n in sorted(expected) if n in values and list(values[n].shape) != expected[n]]
    if missing or unknown or mismatched:
        raise WeightsConversionError("the converted weights do not fit %s: %s" % (model_name, "; ".join(
            "%d %s: %s" % (len(names), what, checkpoint_reader.listed(names, 5)) for what, names in
            (("missing", missing), ("unknown", unknown), ("shape mismatches", mismatched)) if names)))


def write_checkpoint(variables, output):
    """Saves [(name, array)] as a TensorFlow checkpoint with exactly those keys."""
    import tensorflow.compat.v1 as tf

    with tf.Graph().as_default():
        feeds, saved = {}, {}
        for index, (name, value) in enumerate(variables):
            initial = tf.placeholder(tf.float32, value.shape)
            saved[name] = tf.Variable(initial, name="variable_%d" % index)
            feeds[initial] = value
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer(), feeds)
            tf.train.Saver(var_list=saved, save_relative_paths=True).save(sess, output, write_meta_graph=False)


def _check_output(output, overwrite):
    folder = os.path.dirname(os.path.abspath(output))
    taken = [p for p in (output + ".index", os.path.join(folder, run_config.RUN_CONFIG_FILE)) if os.path.exists(p)]
    if taken and not overwrite:
        raise WeightsConversionError("%s already exists: pass another --output, or --overwrite to replace it"
                                     % taken[0])
    others = [name for name in os.listdir(folder) if name.endswith(".index")
              and name != os.path.basename(output) + ".index"] if os.path.isdir(folder) else []
    if others:
        raise WeightsConversionError("%s already holds another checkpoint (%s), which would be picked instead: pass an "
                              "empty folder in --output" % (folder, others[0]))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise WeightsConversionError("%s is a file: pass --output=<folder>/model.ckpt" % folder)


def convert(source, output=None, model_name=None, timm_model=None, overwrite=False, log=print):
    """Converts `source` into an official-layout checkpoint; returns (prefix, model name, variable count)."""
    try:
        tensors = weight_readers.read_weights(source)
    except weight_readers.WeightsFileError as err:
        raise WeightsConversionError(str(err))
    network = parse_network(tensors, source, timm_model)
    model_name = detect_model_name(network, model_name)
    num_classes = int(network.head.dense_bias.shape[0])
    output = output or os.path.join("weights", model_name, "model.ckpt")
    _check_output(output, overwrite)
    variables = official_variables(network, model_name)
    check_variables(variables, model_name, num_classes)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_checkpoint(variables, output)
    run_config.write(os.path.dirname(os.path.abspath(output)), model_name=model_name, num_classes=num_classes,
                     image_size=efficientnet_builder.model_spec(model_name).resolution, source_file=source)
    log("converted %s (%s naming): %d source tensors mapped to %d variables of %s (%d classes) in %s"
        % (source, network.source, len(tensors), len(variables), model_name, num_classes, output))
    return output, model_name, len(variables)
