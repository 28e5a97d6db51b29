"""Writes a checkpoint as every format users deploy with, and checks each file against the checkpoint on
real images before it reports success.

Formats (all take float32 NHWC RGB 0..255 images after preprocess.py's evaluation preprocessing, centre
crop and bicubic resize; the mean/std normalization is inside every file):
  pb           frozen GraphDef (`input` -> `logits`, `probs`), for ATC (--framework=3)
  saved_model  SavedModel, signature `serving_default`: `images` -> `logits`, `probabilities`,
               `top_k_classes`, `top_k_probabilities`
  tflite_fp32  TFLite, float32
  tflite_fp16  TFLite, float16 weights (computed in float32 on CPUs)
  tflite_int8  TFLite, full-integer post-training quantization calibrated on training images: uint8 input
               (the 0..255 pixels) and uint8 logits
  onnx         ONNX opset 13 (ATC takes opsets 11-15) through tf2onnx, NCHW input `input`, outputs `logits`,
               `probs`; swish is exported as Sigmoid and Mul
Every file is written under a temporary name, run on the check images, and renamed only when its check
passes: a failed export leaves nothing under its final name.
"""
import collections
import importlib
import os
import shutil
import sys

import numpy as np
import tensorflow.compat.v1 as tf

import freeze_graph
import preprocess
from effnet.checkpoints import checkpoint_reader, run_config
from effnet.export import outputs, runtimes

FORMATS = ("pb", "saved_model", "tflite_fp32", "tflite_fp16", "tflite_int8", "onnx")
FLOAT_BOUNDS = {"pb": 1e-4, "saved_model": 1e-4, "tflite_fp32": 1e-4, "tflite_fp16": 1e-2, "onnx": 1e-4}
ONNX_OPSET = 13
MIN_CALIBRATION_IMAGES = 10
TOP_K = 5

Check = collections.namedtuple(
    "Check", "format path megabytes max_relative_difference bound agreement top1 reference_top1 passed reason")
ExportResult = collections.namedtuple(
    "ExportResult", "checks model_name num_classes image_size use_ema check_source atc")


class ExportError(ValueError):
    """Bad export input (checkpoint, formats, data, output); the message names the fix."""


def file_names(model_name):
    """{format: file or folder name} inside the output folder."""
    return {"pb": model_name + ".pb", "saved_model": "saved_model",
            "tflite_fp32": model_name + "_fp32.tflite", "tflite_fp16": model_name + "_fp16.tflite",
            "tflite_int8": model_name + "_int8.tflite", "onnx": model_name + ".onnx"}


def onnx_available():
    """Whether tf2onnx and onnxruntime import (the optional requirements-export.txt)."""
    try:
        import onnxruntime  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
        import tf2onnx  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
        return False
    return True


def choose_formats(requested):
    """The formats to write, in FORMATS order. Empty or 'all': every format whose packages are installed
    (a note says when ONNX is left out); an unknown name or an unavailable ONNX asked for by name: ExportError."""
    names = [name.strip() for name in (requested or []) if name.strip()]
    if not names or names == ["all"]:
        if onnx_available():
            return list(FORMATS)
        print("note: ONNX left out: %s" % runtimes.missing_package("tf2onnx/onnxruntime"), file=sys.stderr)
        return [name for name in FORMATS if name != "onnx"]
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise ExportError("unknown format %s in --formats: choose from %s (or all)"
                          % (", ".join(repr(name) for name in unknown), ",".join(FORMATS)))
    if "onnx" in names and not onnx_available():
        raise ExportError(runtimes.missing_package("tf2onnx/onnxruntime"))
    return [name for name in FORMATS if name in names]


def check_images(image_size, num_classes, data_path=None, photos=None, limit=100):
    """(images, labels or None, description): the given photos, else up to `limit` validation images."""
    if photos:
        with tf.Graph().as_default():
            path = tf.placeholder(tf.string, [])
            image = preprocess.decode_and_preprocess_file(path, image_size)
            with tf.Session() as sess:
                try:
                    pixels = [sess.run(image, {path: photo}) for photo in photos]
                except tf.errors.OpError as err:
                    raise ExportError("cannot read a check photo (%s): pass JPEG, PNG, GIF or BMP files"
                                      % err.message.splitlines()[0])
        return np.stack(pixels), None, "%d given photos" % len(photos)
    if not data_path:
        raise ExportError("no check images: pass --data_path (validation records) or --images (photos)")
    images, labels = preprocess.eval_images(data_path, "validation", image_size, limit, num_classes)
    return images, labels, "%d validation images of %s" % (len(labels), data_path)


def calibration_images(data_path, image_size, num_classes, count):
    """`count` training images through the evaluation preprocessing, for int8 calibration."""
    if count < MIN_CALIBRATION_IMAGES:
        raise ExportError("--calibration_images=%d is too few to calibrate int8 ranges: pass at least %d"
                          % (count, MIN_CALIBRATION_IMAGES))
    if not data_path:
        raise ExportError("tflite_int8 needs training images to calibrate on: pass --data_path, or leave "
                          "tflite_int8 out of --formats")
    images, _ = preprocess.eval_images(data_path, "train", image_size, count, num_classes)
    if len(images) < count:
        raise ExportError("the training split of %s holds %d images, fewer than --calibration_images=%d: pass "
                          "--calibration_images=%d or less (at least %d), or more training data"
                          % (data_path, len(images), count, len(images), MIN_CALIBRATION_IMAGES))
    return images


def tflite_model(graph_def, kind, calibration=None):
    """The .tflite bytes of a frozen graph: float32, float16 weights, or full-integer int8 (uint8 in/out)."""
    graph = tf.Graph()
    with graph.as_default():  # the converter's graph optimizations read the default graph's collections
        tf.import_graph_def(graph_def, name="")
        converter = tf.lite.TFLiteConverter(
            graph_def, [graph.get_tensor_by_name(freeze_graph.INPUT_NAME + ":0")],
            [graph.get_tensor_by_name(freeze_graph.OUTPUT_NAMES[0] + ":0")])
        if kind == "tflite_fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif kind == "tflite_int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in calibration_pixels(calibration))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        # TF 1.15 converts in a helper program installed beside the interpreter, which may not be on PATH.
        path = os.environ.get("PATH", "")
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + path
        try:
            return converter.convert()
        finally:
            os.environ["PATH"] = path


def calibration_pixels(images):
    """The calibration images as the int8 file's uint8 input sees them: clipped to 0..255 (bicubic resizing
    overshoots), the first with one black and one white pixel, so the input range is the whole byte and the
    file takes plain pixels (scale 1, zero point 0) whatever the photos' own range."""
    images = np.clip(images, 0.0, 255.0)
    images[0, 0, 0, :], images[0, 0, 1, :] = 0.0, 255.0
    return images


def write_onnx(graph_def, path):
    """Converts the frozen graph to ONNX at `path`: NCHW input `input`, outputs `logits` and `probs`."""
    tf2onnx = runtimes.import_optional("tf2onnx")
    importlib.import_module("tf2onnx.convert")  # the submodule tf2onnx.convert.from_graph_def lives in
    tf2onnx.logging.set_level(tf2onnx.logging.ERROR)
    names = [freeze_graph.INPUT_NAME] + list(freeze_graph.OUTPUT_NAMES)
    tf2onnx.convert.from_graph_def(
        graph_def, input_names=[names[0] + ":0"], output_names=[n + ":0" for n in names[1:]], opset=ONNX_OPSET,
        inputs_as_nchw=[names[0] + ":0"], tensors_to_rename={n + ":0": n for n in names}, output_path=path)


def aipp_config(image_size):
    """AIPP static config for the exported files: uint8 RGB pixels in, the same values out as the float input
    (the files normalize inside, so AIPP does no mean/std)."""
    return "\n".join([
        "aipp_op {", "    aipp_mode: static", "    input_format: RGB888_U8",
        "    src_image_size_w: %d" % image_size, "    src_image_size_h: %d" % image_size,
        "    csc_switch: false", "    rbuv_swap_switch: false", "}"]) + "\n"


def onnx_atc_command(onnx_path, image_size, batch_size, soc_version, aipp_path):
    """The ATC command for the ONNX file (framework 5, NCHW input `input`)."""
    batch = batch_size if batch_size and batch_size > 0 else -1
    parts = ["atc", "--model=%s" % onnx_path, "--framework=5", "--output=%s_onnx" % os.path.splitext(onnx_path)[0],
             "--soc_version=%s" % soc_version,
             '--input_shape="%s:%d,3,%d,%d"' % (freeze_graph.INPUT_NAME, batch, image_size, image_size),
             "--input_format=NCHW", "--output_type=FP32"]
    if batch < 0:
        parts.append('--dynamic_batch_size="1,2,4,8,16,32"')
    parts.append("--insert_op_conf=%s" % aipp_path)
    return " ".join(parts)


def _runtime_for(kind, path):
    if kind == "pb":
        return runtimes.FrozenGraphRuntime(path)
    if kind == "saved_model":
        return runtimes.SavedModelRuntime(path)
    if kind == "onnx":
        return runtimes.OnnxRuntime(path)
    return runtimes.TFLiteRuntime(path)


def check_file(kind, path, images, labels, reference, int8_max_top1_drop, int8_min_agreement):
    """Runs the written file on the check images and compares it with the checkpoint's logits; returns Check."""
    runtime = _runtime_for(kind, path)
    try:
        logits = np.concatenate([runtime.logits(images[i:i + 32]) for i in range(0, len(images), 32)])
    finally:
        runtime.close()
    # Relative to the largest logit, but never to less than 1: the logits of a briefly fine-tuned head are
    # small (0.5), and there a float16 file's 0.007 moves the probabilities by 0.3%, as 0.007 does at any scale.
    difference = float(np.abs(logits - reference).max() / max(np.abs(reference).max(), 1.0))
    predicted, expected = logits.argmax(axis=1), reference.argmax(axis=1)
    agreement = float(np.mean(predicted == expected))
    top1 = reference_top1 = None
    if labels is not None:
        top1, reference_top1 = float(np.mean(predicted == labels)), float(np.mean(expected == labels))
    bound = FLOAT_BOUNDS.get(kind)
    reason = None
    if bound is not None and not difference <= bound:
        reason = "logits differ from the checkpoint's by %.2g (relative, absolute below 1), more than %.0e" % (
            difference, bound)
    elif bound is None and agreement < int8_min_agreement:
        reason = "int8 top-1 agrees with the checkpoint on %.1f%% of the images, less than %.1f%%" % (
            100 * agreement, 100 * int8_min_agreement)
    elif bound is None and labels is not None and reference_top1 - top1 > int8_max_top1_drop + 1e-9:
        reason = "int8 top-1 %.4f is %.1f points below the checkpoint's %.4f (allowed: %.1f)" % (
            top1, 100 * (reference_top1 - top1), reference_top1, 100 * int8_max_top1_drop)
    return Check(kind, path, _megabytes(path), difference, bound, agreement, top1, reference_top1, reason is None,
                 reason)


def _megabytes(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path)
                   for name in names) / 1e6
    return os.path.getsize(path) / 1e6


def export(checkpoint, output_dir=None, formats=None, use_ema="auto", data_path=None, photos=None,
           num_check_images=100, num_calibration_images=100, image_size=None, overwrite=False,
           int8_max_top1_drop=0.02, int8_min_agreement=0.9, soc_version="Ascend310", log=print):
    """Writes and checks every chosen format; returns ExportResult (checks in FORMATS order). Files whose
    check fails are not written; the others are."""
    prefix = checkpoint_reader.resolve_checkpoint(checkpoint)
    if checkpoint_reader.checkpoint_model_name(prefix) is None:
        raise ExportError("checkpoint %s holds no efficientnet-* variables: pass a checkpoint written by train.py "
                          "or convert_weights.py" % prefix)
    model_name, num_classes, image_size = checkpoint_reader.infer_model(prefix, None, None, image_size)
    use_ema = checkpoint_reader.resolve_use_ema(use_ema, prefix)
    named = [name for name in (formats or []) if name.strip() and name.strip() != "all"]
    formats = choose_formats(formats)
    if "tflite_int8" in formats and not data_path and not named:
        print("note: tflite_int8 left out: it calibrates on training images; pass --data_path", file=sys.stderr)
        formats.remove("tflite_int8")
    output_dir = output_dir or os.path.join(os.path.dirname(prefix), "export")
    names = file_names(model_name)
    paths = {kind: os.path.join(output_dir, names[kind]) for kind in formats}
    aipp_path = os.path.join(output_dir, "aipp.cfg") if {"pb", "onnx"} & set(formats) else None
    labels_source = run_config.labels_file(prefix)
    labels_path = os.path.join(output_dir, run_config.LABELS_FILE) if labels_source else None
    inputs = outputs.checkpoint_inputs(prefix)
    for path in list(paths.values()) + [p for p in (aipp_path, labels_path) if p]:
        outputs.check_output(path, inputs, overwrite, flag="--output_dir")

    images, labels, check_source = check_images(image_size, num_classes, data_path, photos, num_check_images)
    calibration = None
    if "tflite_int8" in formats:
        calibration = calibration_images(data_path, image_size, num_classes, num_calibration_images)

    log("exporting %s (%s, %d classes, %dx%d, %s weights) to %s: %s" % (
        prefix, model_name, num_classes, image_size, image_size, "EMA" if use_ema else "raw", output_dir,
        ", ".join(formats)))
    graph = tf.Graph()
    with graph.as_default():
        tensors = freeze_graph.build_inference_graph(model_name, num_classes, image_size, batch_size=None)
        with tf.Session(graph=graph) as sess:
            checkpoint_reader.restore(sess, prefix, tf.global_variables(), use_ema)
            reference = np.concatenate([sess.run(tensors[1], {tensors[0]: images[i:i + 32]})
                                        for i in range(0, len(images), 32)])
            frozen = tf.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), list(freeze_graph.OUTPUT_NAMES))
            created = not os.path.isdir(output_dir)
            os.makedirs(output_dir, exist_ok=True)
            checks = []
            for kind in formats:
                log("writing %s ..." % paths[kind])
                checks.append(_write_and_check(kind, paths[kind], overwrite, sess, tensors, frozen, calibration,
                                               (images, labels, reference), int8_max_top1_drop,
                                               int8_min_agreement))
    atc = {}
    written = {check.format for check in checks if check.passed}
    if created and not written:
        os.rmdir(output_dir)  # every check failed: leave no empty folder behind
    if aipp_path and {"pb", "onnx"} & written:
        _write_text(aipp_path, aipp_config(image_size), overwrite)
        if "pb" in written:
            atc["pb"] = freeze_graph.atc_command(paths["pb"], image_size, 1, soc_version, aipp_path)
        if "onnx" in written:
            atc["onnx"] = onnx_atc_command(paths["onnx"], image_size, 1, soc_version, aipp_path)
    if labels_path and written:
        with outputs.written_atomically(labels_path, overwrite) as temporary:
            shutil.copyfile(labels_source, temporary)
    return ExportResult(checks, model_name, num_classes, image_size, use_ema, check_source, atc)


class _CheckFailed(Exception):
    """Raised inside written_atomically to drop a file whose check failed (the Check says why)."""


def _write_and_check(kind, path, overwrite, sess, tensors, frozen, calibration, check_data, int8_max_top1_drop,
                     int8_min_agreement):
    """Writes one format under a temporary name, checks it, and renames it only when the check passes."""
    images, labels, reference = check_data
    failed = None
    try:
        with outputs.written_atomically(path, overwrite) as temporary:
            try:
                if kind == "pb":
                    with open(temporary, "wb") as handle:
                        handle.write(frozen.SerializeToString())
                elif kind == "saved_model":
                    _write_saved_model(sess, temporary, tensors)
                elif kind == "onnx":
                    write_onnx(frozen, temporary)
                else:
                    with open(temporary, "wb") as handle:
                        handle.write(tflite_model(frozen, kind, calibration))
            except (runtimes.ModelFileError, OSError):  # a missing package, a full disk: not this format's fault
                raise
            except Exception as err:  # the converters raise many types; each failure becomes the check's reason
                failed = Check(kind, path, 0.0, float("nan"), FLOAT_BOUNDS.get(kind), 0.0, None, None, False,
                               "conversion failed: %s" % _first_line(err))
                raise _CheckFailed()
            check = check_file(kind, temporary, images, labels, reference, int8_max_top1_drop, int8_min_agreement)
            failed = check._replace(path=path) if not check.passed else None
            if failed:
                raise _CheckFailed()
    except _CheckFailed:
        return failed
    return check._replace(path=path)


def _first_line(err):
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _write_text(path, text, overwrite):
    with outputs.written_atomically(path, overwrite) as temporary:
        with open(temporary, "w") as handle:
            handle.write(text)


def _write_saved_model(sess, path, tensors):
    images, logits, probs = tensors
    with sess.graph.as_default():
        top_probabilities, top_classes = tf.nn.top_k(probs, k=min(TOP_K, logits.shape.as_list()[-1]))
    builder = tf.saved_model.builder.SavedModelBuilder(path)
    signature = tf.saved_model.signature_def_utils.predict_signature_def(
        inputs={runtimes.SAVED_MODEL_INPUT: images},
        outputs={"logits": logits, "probabilities": probs, "top_k_classes": top_classes,
                 "top_k_probabilities": top_probabilities})
    builder.add_meta_graph_and_variables(sess, [tf.saved_model.tag_constants.SERVING],
                                         signature_def_map={runtimes.SAVED_MODEL_SIGNATURE: signature},
                                         strip_default_attrs=True)
    builder.save()


def format_table(result):
    """The check table, one row per format."""
    rows = [("format", "file", "MB", "max logit diff", "top-1 agrees", "top-1 file / checkpoint", "check")]
    for check in result.checks:
        bound = "<= %.0e" % check.bound if check.bound is not None else "int8"
        accuracy = ("%.4f / %.4f" % (check.top1, check.reference_top1)) if check.top1 is not None else "-"
        rows.append((check.format, os.path.basename(check.path), "%.1f" % check.megabytes,
                     "%.1e (%s)" % (check.max_relative_difference, bound), "%.1f%%" % (100 * check.agreement),
                     accuracy, "ok" if check.passed else "FAILED"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
