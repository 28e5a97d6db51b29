"""Runs a trained model from any file it is deployed as, behind one interface, so test.py, predict.py, the
export checks and bench/inference.py feed every format the same images and compare the same logits.

Every runtime takes float32 images [n, S, S, 3], RGB 0..255 after preprocess.py's evaluation preprocessing
(centre crop, bicubic resize); the mean/std normalization is inside every exported file. `logits(images)`
returns float32 [n, classes] (dequantized for an int8 TFLite file).
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf
from google.protobuf import message

import efficientnet_builder
import freeze_graph
from effnet.checkpoints import checkpoint_reader

REQUIREMENTS_FILE = "requirements-export.txt"
SAVED_MODEL_SIGNATURE = "serving_default"
SAVED_MODEL_INPUT = "images"


class ModelFileError(ValueError):
    """A model file that cannot be read as the format it claims; the message names the fix."""


def missing_package(package):
    """The one-line message for an optional export package that is not installed."""
    return ("%s is not installed (needed for ONNX): pip install -r %s (Python 3.7 / TensorFlow 1.15 versions)"
            % (package, REQUIREMENTS_FILE))


def import_optional(module, package=None):
    """Imports an optional dependency, or raises ModelFileError with missing_package's message."""
    try:
        return __import__(module)
    except ImportError:
        raise ModelFileError(missing_package(package or module))


def kind_of(path):
    """'pb', 'saved_model', 'tflite', 'onnx' for an exported model file or folder, else None (a checkpoint)."""
    if not path:
        return None
    if os.path.isdir(path):
        return "saved_model" if os.path.isfile(os.path.join(path, "saved_model.pb")) else None
    extension = os.path.splitext(path)[1].lower()
    return {".pb": "pb", ".tflite": "tflite", ".onnx": "onnx"}.get(extension)


def _chunks(images, batch):
    """Splits images into pieces of at most `batch` (all at once when batch is None)."""
    step = batch or len(images) or 1
    return [images[i:i + step] for i in range(0, len(images), step)]


class _SessionRuntime(object):
    """A model in a tf.Session: `input` fed, `logits_tensor` fetched."""

    def logits(self, images):
        return self.sess.run(self.logits_tensor, {self.input: images})

    def close(self):
        self.sess.close()


class CheckpointRuntime(_SessionRuntime):
    """The checkpoint itself (EMA or raw weights), in the inference graph freeze_graph.py freezes."""

    kind = "checkpoint"

    def __init__(self, checkpoint, model_name=None, num_classes=None, image_size=None, use_ema="auto"):
        self.prefix = checkpoint_reader.resolve_checkpoint(checkpoint)
        self.model_name, self.num_classes, self.image_size = checkpoint_reader.infer_model(
            self.prefix, model_name, num_classes, image_size)
        self.use_ema = checkpoint_reader.resolve_use_ema(use_ema, self.prefix)
        self.source = "%s (%s, %s weights)" % (self.prefix, self.model_name, "EMA" if self.use_ema else "raw")
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.input, self.logits_tensor, self.probs = freeze_graph.build_inference_graph(
                self.model_name, self.num_classes, self.image_size, batch_size=None)
            self.sess = tf.Session(graph=self.graph)
            checkpoint_reader.restore(self.sess, self.prefix, tf.global_variables(), self.use_ema)


class FrozenGraphRuntime(_SessionRuntime):
    """A frozen .pb from freeze_graph.py or export.py, whichever input dtype, batch and normalization it has."""

    kind = "pb"

    def __init__(self, path, model_name=None):
        graph_def = tf.GraphDef()
        try:
            with open(path, "rb") as handle:
                graph_def.ParseFromString(handle.read())
        except message.DecodeError as err:
            raise ModelFileError("cannot parse %s as a TensorFlow graph (%s): pass a .pb written by export.py or "
                                 "freeze_graph.py" % (path, err))
        names = {node.name for node in graph_def.node}
        wanted = {freeze_graph.INPUT_NAME, freeze_graph.OUTPUT_NAMES[0]}
        if not wanted <= names:
            raise ModelFileError("frozen graph %s lacks the nodes %s: write it with export.py or freeze_graph.py"
                                 % (path, ", ".join(sorted(wanted - names))))
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name="")
        self.input = self.graph.get_tensor_by_name(freeze_graph.INPUT_NAME + ":0")
        self.logits_tensor = self.graph.get_tensor_by_name(freeze_graph.OUTPUT_NAMES[0] + ":0")
        shape = self.input.shape.as_list()
        self.batch, self.image_size = shape[0], shape[1]
        self.num_classes = self.logits_tensor.shape.as_list()[-1]
        scopes = {name.split("/", 1)[0] for name in names if name.startswith("efficientnet-") and "/" in name}
        self.model_name = model_name or (scopes.pop() if len(scopes) == 1 else None)
        self.normalization = None
        if not any(name.startswith("normalize/") for name in names):
            if self.input.dtype == tf.uint8:
                raise ModelFileError("frozen graph %s takes uint8 input normalized by ATC's AIPP, which the host "
                                     "cannot feed: use the checkpoint, or a graph with normalization inside" % path)
            if not self.model_name:
                raise ModelFileError("cannot tell the model of %s to normalize its input: pass --model_name" % path)
            mean, std = efficientnet_builder.normalization_constants(self.model_name)
            self.normalization = (np.array(mean, np.float32), np.array(std, np.float32))
        self.source = "%s (%s, frozen graph)" % (path, self.model_name or "EfficientNet")
        self.sess = tf.Session(graph=self.graph)

    def logits(self, images):
        if self.normalization:
            images = (images - self.normalization[0]) / self.normalization[1]
        if self.input.dtype == tf.uint8:
            images = np.clip(np.round(images), 0, 255).astype(np.uint8)
        results = []
        for chunk in _chunks(images, self.batch):
            count = len(chunk)
            if self.batch and count < self.batch:  # a static batch: pad the last piece
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - count, axis=0)])
            results.append(self.sess.run(self.logits_tensor, {self.input: chunk})[:count])
        return np.concatenate(results)


class SavedModelRuntime(_SessionRuntime):
    """A SavedModel folder from export.py, through its serving signature."""

    kind = "saved_model"

    def __init__(self, path, model_name=None):
        self.graph = tf.Graph()
        self.sess = tf.Session(graph=self.graph)
        try:
            meta = tf.saved_model.loader.load(self.sess, [tf.saved_model.tag_constants.SERVING], path)
        except (RuntimeError, IOError, tf.errors.OpError, message.DecodeError) as err:
            raise ModelFileError("cannot load SavedModel %s (%s): pass a folder written by export.py"
                                 % (path, str(err).splitlines()[0]))
        signature = meta.signature_def.get(SAVED_MODEL_SIGNATURE)
        if signature is None or SAVED_MODEL_INPUT not in signature.inputs or "logits" not in signature.outputs:
            raise ModelFileError("SavedModel %s has no %r signature taking %r and giving 'logits': pass a folder "
                                 "written by export.py" % (path, SAVED_MODEL_SIGNATURE, SAVED_MODEL_INPUT))
        self.input = self.graph.get_tensor_by_name(signature.inputs[SAVED_MODEL_INPUT].name)
        self.logits_tensor = self.graph.get_tensor_by_name(signature.outputs["logits"].name)
        self.image_size = self.input.shape.as_list()[1]
        self.num_classes = self.logits_tensor.shape.as_list()[-1]
        self.model_name = model_name
        self.source = "%s (SavedModel)" % path


class TFLiteRuntime(object):
    """A .tflite file (float32, float16 weights, or full-integer int8/uint8 input and output)."""

    kind = "tflite"

    def __init__(self, path, model_name=None, num_threads=None):
        try:
            self.interpreter = _interpreter(path, num_threads)
        except ValueError as err:
            raise ModelFileError("cannot load %s as a TFLite model (%s): pass a .tflite written by export.py"
                                 % (path, str(err).splitlines()[0]))
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_detail = self.interpreter.get_output_details()[0]
        shape = self.input_detail["shape"]
        self.image_size, self.num_classes = int(shape[1]), int(self.output_detail["shape"][-1])
        self.batch = int(shape[0])
        self.model_name = model_name
        self.quantized = self.input_detail["dtype"] in (np.uint8, np.int8)
        self.source = "%s (TFLite, %s input)" % (path, np.dtype(self.input_detail["dtype"]).name)

    def _resize(self, batch):
        if batch != self.batch:
            self.interpreter.resize_tensor_input(self.input_detail["index"], [batch, self.image_size,
                                                                              self.image_size, 3])
            self.interpreter.allocate_tensors()
            self.batch = batch

    def logits(self, images):
        self._resize(len(images))
        dtype = self.input_detail["dtype"]
        if self.quantized:
            scale, zero_point = self.input_detail["quantization"]
            info = np.iinfo(dtype)
            images = np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self.input_detail["index"], images.astype(dtype, copy=False))
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self.output_detail["index"])
        if self.output_detail["dtype"] in (np.uint8, np.int8):
            scale, zero_point = self.output_detail["quantization"]
            output = (output.astype(np.float32) - zero_point) * scale
        return output.astype(np.float32)

    def close(self):
        self.interpreter = None


def _interpreter(path, num_threads):
    """tf.lite.Interpreter with num_threads where this TensorFlow takes it (1.15 does not)."""
    try:
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    except TypeError:
        interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    return interpreter


class OnnxRuntime(object):
    """A .onnx file from export.py (NCHW input `input`, outputs `logits`, `probs`) in ONNX Runtime."""

    kind = "onnx"

    def __init__(self, path, model_name=None, num_threads=None):
        onnxruntime = import_optional("onnxruntime")
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types, by name only
            raise ModelFileError("cannot load %s with ONNX Runtime (%s): pass a .onnx written by export.py"
                                 % (path, str(err).splitlines()[0]))
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.nchw = model_input.shape[1] == 3
        self.image_size = int(model_input.shape[2 if self.nchw else 1])
        self.num_classes = int(self.session.get_outputs()[0].shape[-1])
        self.output_name = self.session.get_outputs()[0].name
        self.model_name = model_name
        self.source = "%s (ONNX, %s input)" % (path, "NCHW" if self.nchw else "NHWC")

    def logits(self, images):
        if self.nchw:
            images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        return self.session.run([self.output_name], {self.input_name: images})[0]

    def close(self):
        self.session = None


def open_model(path, model_name=None, num_classes=None, image_size=None, use_ema="auto", num_threads=None,
               kind=None):
    """The runtime for `path`: an exported file (by its extension; a folder with saved_model.pb), else a
    checkpoint folder or prefix; `kind` (a kind_of value) names the format whatever the file name.
    image_size/num_classes given for an exported file must match it."""
    kind = kind or kind_of(path)
    if kind is None:
        return CheckpointRuntime(path, model_name, num_classes, image_size, use_ema)
    if not os.path.exists(path):
        raise ModelFileError("model file %s not found: pass a file written by export.py" % path)
    if kind == "pb":
        runtime = FrozenGraphRuntime(path, model_name)
    elif kind == "saved_model":
        runtime = SavedModelRuntime(path, model_name)
    elif kind == "tflite":
        runtime = TFLiteRuntime(path, model_name, num_threads)
    else:
        runtime = OnnxRuntime(path, model_name, num_threads)
    for name, given in (("image_size", image_size), ("num_classes", num_classes)):
        if given and given != getattr(runtime, name):
            raise ModelFileError("%s has %s %d, not --%s=%d: drop --%s" % (
                path, name, getattr(runtime, name), name, given, name))
    return runtime


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
