"""Classifies image files with an EfficientNet checkpoint or a frozen graph and prints the top-k classes.

Usage:
  python predict.py --checkpoint=model/ photo.jpg photos_folder/ [--images=a.jpg,b.png]
  python predict.py --frozen_graph=model/efficientnet-b0.pb photo.jpg
  python predict.py --checkpoint=model/export/efficientnet-lite0_int8.tflite photo.jpg   # any export.py file
  python predict.py --checkpoint=model/ --data_path=data/demo photo.png   # names from data/demo/labels.txt

Class names come from --labels, else the labels file of the dataset given by --data_path, else the
labels.txt that train.py copies into the model folder (or the data's labels file it recorded), else the shipped
imagenet_classes.txt for 1000-class models, else "class N". Images get the evaluation
preprocessing (centre crop, bicubic resize). Files that are not readable images are reported and
skipped; the exit code is 0 when at least one image was classified.
"""
import csv
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags

import efficientnet_builder
import preprocess
from effnet import cli
from effnet.checkpoints import run_config
from effnet.export import runtimes

FLAGS = flags.FLAGS
IMAGENET_CLASSES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.txt")


class PredictError(ValueError):
    """Bad predict.py input; the message names the fix."""


def define_flags():
    """Defines the CLI flags (only when run as a script, so the module imports without side effects)."""
    flags.DEFINE_string("checkpoint", None, "Checkpoint folder (its newest checkpoint) or checkpoint prefix, or a "
                        "file export.py wrote (.pb, SavedModel folder, .tflite, .onnx).")
    flags.DEFINE_string("frozen_graph", None,
                        "Frozen .pb written by freeze_graph.py (instead of --checkpoint).")
    flags.DEFINE_enum("model_name", None, efficientnet_builder.MODEL_NAMES,
                      "Model to build; default: the model the checkpoint (or frozen graph) holds.")
    flags.DEFINE_integer("num_classes", None, "Classes of the head; default: from the checkpoint.")
    flags.DEFINE_integer("image_size", None, "Input height and width; default: the size the checkpoint was trained at "
                         "(run_config.json), else the model's resolution.")
    flags.DEFINE_string("labels", None, "Class names, one per line in class order (default: see module doc).")
    flags.DEFINE_string("data_path", None, "Dataset folder whose labels.txt names the classes.")
    cli.define_weights_variant("Which weights of a checkpoint to classify with.")
    flags.DEFINE_integer("top_k", 5, "Number of classes printed per image.")
    flags.DEFINE_string("output_csv", None, "Also write a CSV (path, then class, index and probability of each of "
                        "the top-k) to this new file.")
    flags.DEFINE_list("images", [], "Image files or folders (comma separated); more may follow as arguments.")


def collect_images(inputs):
    """Expands folders (their files, sorted, not recursive); returns (files, [(path, reason)] skipped)."""
    files, skipped = [], []
    for path in inputs:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if not n.startswith("."))
            files.extend(os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n)))
        elif os.path.isfile(path):
            files.append(path)
        else:
            skipped.append((path, "no such file or folder"))
    return files, skipped


def class_names(num_classes, labels=None, data_path=None):
    """Names for the model's classes (see the module doc for the order of sources)."""
    path = labels
    if not path and data_path:
        path = (preprocess.read_dataset_info(data_path)["labels_file"]
                or os.path.join(data_path, preprocess.LABELS_FILE))
        if not os.path.isfile(path):
            print("warning: no %s in %s; naming classes by index" % (preprocess.LABELS_FILE, data_path),
                  file=sys.stderr)
            path = None
    if not path and num_classes == 1000:
        path = IMAGENET_CLASSES
    if not path:
        return ["class %d" % i for i in range(num_classes)]
    names = preprocess.load_labels(path)
    if len(names) != num_classes:
        raise PredictError("labels file %s has %d names but the model has %d classes: pass --labels with "
                           "one name per class" % (path, len(names), num_classes))
    return names


def predict(model, names, files, top_k=5, out=sys.stdout, rows=None):
    """Prints the top-k classes of each readable image, appending [path, (class, index, probability) x top_k]
    to `rows` when given; returns (count, [(path, reason)] skipped). `model` is a runtime of
    effnet.export.runtimes (a checkpoint or any exported file)."""
    graph = tf.Graph()
    with graph.as_default():
        path = tf.placeholder(tf.string, [])
        image = preprocess.decode_and_preprocess_file(path, model.image_size)
    top_k = max(1, min(top_k, model.num_classes))
    predicted, skipped = 0, []
    with tf.Session(graph=graph) as sess:
        for file_path in files:
            try:
                pixels = sess.run(image, {path: file_path})
            except (tf.errors.OpError, preprocess.DatasetError) as err:
                reason = getattr(err, "message", None) or str(err)
                skipped.append((file_path, reason.splitlines()[0]))
                print("warning: skipping %s: %s" % skipped[-1], file=sys.stderr)
                continue
            logits = model.logits(pixels[None])[0]
            probs = runtimes.softmax(logits)
            print(file_path, file=out)
            # Rank by logits: saturated probabilities tie at 0 and would lose the order.
            ranked = np.argsort(-logits, kind="stable")[:top_k]
            for rank, index in enumerate(ranked, 1):
                print("  %d. %s (%d)  %.4f" % (rank, names[index], index, probs[index]), file=out)
            if rows is not None:
                rows.append([file_path] + [value for index in ranked
                                           for value in (names[index], int(index), "%.6f" % probs[index])])
            predicted += 1
    return predicted, skipped


def run(inputs, checkpoint=None, frozen_graph=None, model_name=None, num_classes=None, image_size=None,
        labels=None, data_path=None, use_ema="auto", top_k=5, output_csv=None):
    """Loads the model and classifies `inputs` (files or folders); returns the number of images classified."""
    if bool(checkpoint) == bool(frozen_graph):
        raise PredictError("pass exactly one of --checkpoint (folder or prefix) and --frozen_graph (.pb)")
    if not inputs:
        raise PredictError("no images given: pass image files or folders as arguments or "
                           "--images=a.jpg,b.png")
    if top_k < 1:
        raise PredictError("--top_k must be at least 1, got %d" % top_k)
    for name, value in (("num_classes", num_classes), ("image_size", image_size)):
        if value is not None and value < 1:
            raise PredictError("--%s must be at least 1, got %d (leave it out for the checkpoint's own)"
                               % (name, value))
    if output_csv and os.path.exists(output_csv):
        raise PredictError("--output_csv %s already exists: pass a new file name (or remove it)" % output_csv)
    files, skipped = collect_images(inputs)
    for path, reason in skipped:
        print("warning: skipping %s: %s" % (path, reason), file=sys.stderr)
    # --frozen_graph is a .pb whatever its file name; --checkpoint is told apart by runtimes.kind_of.
    model = runtimes.open_model(checkpoint or frozen_graph, model_name, num_classes, image_size, use_ema,
                                kind="pb" if frozen_graph else None)
    if checkpoint and not (labels or data_path):
        # export.py puts labels.txt beside its files (a SavedModel folder's parent holds it).
        labels = run_config.labels_file(os.path.dirname(checkpoint.rstrip(os.sep))
                                        if runtimes.kind_of(checkpoint) == "saved_model" else checkpoint)
        recorded = run_config.read(checkpoint).get("labels_file")
        if not labels and recorded:
            print("warning: the labels file %s recorded for this model is gone and the model folder has no %s; "
                  "using default class names (pass --labels to name them)" % (recorded, run_config.LABELS_FILE),
                  file=sys.stderr)
    names = class_names(model.num_classes, labels, data_path)
    print("model: %s, %d classes, %dx%d input" % (model.source, model.num_classes, model.image_size,
                                                  model.image_size))
    rows = [] if output_csv else None
    predicted, unreadable = predict(model, names, files, top_k, rows=rows)
    if not predicted:
        raise PredictError("no image could be classified (%d skipped): pass JPEG, PNG, GIF or BMP files"
                           % (len(skipped) + len(unreadable)))
    if output_csv:
        ranks = range(1, min(top_k, model.num_classes) + 1)
        with open(output_csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path"] + [name % rank for rank in ranks
                                        for name in ("class_%d", "index_%d", "probability_%d")])
            writer.writerows(rows)
        print("predictions written to %s" % output_csv)
    return predicted


def main(argv):
    tf.logging.set_verbosity(tf.logging.ERROR)
    run(list(FLAGS.images) + list(argv[1:]), FLAGS.checkpoint, FLAGS.frozen_graph, FLAGS.model_name,
        FLAGS.num_classes, FLAGS.image_size, FLAGS.labels, FLAGS.data_path, cli.weights_variant(), FLAGS.top_k,
        FLAGS.output_csv)


if __name__ == "__main__":
    cli.run(main, (ValueError, IOError, tf.errors.OpError), define_flags, arguments=True)
