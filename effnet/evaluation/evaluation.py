"""Evaluation of a checkpoint on the validation split: every image exactly once, top-1 and top-5."""
import csv
import os
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags, logging

import efficientnet_builder
import preprocess
from effnet import cli, common_flags
from effnet.checkpoints import checkpoint_reader, run_config
from effnet.data import pipeline_errors
from effnet.devices import device
from effnet.export import file_evaluation, runtimes

MAX_PRINTED_CLASSES = 20
# Checkpoints a folder evaluation may find removed under it (a running training's retention) before it gives up.
REMOVED_RETRIES = 3
FLAGS = flags.FLAGS


def define_flags():
    """Defines the flags main_from_flags reads: common_flags', the device's (evaluate resolves the device from
    them) and --report_dir (test.py; train.py adds its own)."""
    common_flags.define_flags()
    device.define_flags()
    flags.DEFINE_string("report_dir", None, "Folder for per_class.csv, confusion.csv and misclassified.csv; "
                        "default: eval_<step> beside a checkpoint train.py wrote (a new eval_<step>.N when that "
                        "exists); none for other checkpoints.")


class Evaluator(object):
    """The validation graph, built once: `run(prefix)` restores a checkpoint into it and evaluates every
    validation image exactly once. test.py and train.py's in-training validation both use it, so they
    report the same numbers for the same checkpoint."""

    def __init__(self, data_path, model_name, num_classes, image_size, batch_size, label_offset, dev):
        self.data_path, self.num_classes, self.label_offset = data_path, num_classes, label_offset
        self.dev = dev
        self.graph = tf.Graph()
        with self.graph.as_default():
            dataset = preprocess.build_dataset(data_path, is_training=False, image_size=image_size,
                                               batch_size=batch_size, label_offset=label_offset,
                                               num_classes=num_classes)
            self.iterator = tf.data.make_initializable_iterator(dataset)
            images, self.labels = self.iterator.get_next()
            logits, _ = efficientnet_builder.build_model(
                efficientnet_builder.normalize_images(images, model_name), model_name, training=False,
                override_params={"num_classes": num_classes, "dropout_fn": dev.dropout_fn()})
            self.model_variables = tf.global_variables()
            _, self.top5 = tf.nn.top_k(logits, k=min(5, num_classes))
            # Plain cross-entropy (no label smoothing); padding labels (-1) are scored as 0 and dropped below.
            self.losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.maximum(self.labels, 0), logits=logits)
            self.sess = tf.Session(config=dev.session_config())
        self._savers = {}

    def close(self):
        self.sess.close()

    def run(self, prefix, use_ema):
        """{'top1', 'top5', 'loss', 'count', 'images_per_second', 'labels', 'predictions' (top-5 class
        indices per image, in record order)} for checkpoint `prefix`."""
        start = time.time()
        var_list, _ = checkpoint_reader.model_variables_restore_map(prefix, self.model_variables, use_ema)
        key = tuple(sorted((name, variable.op.name) for name, variable in var_list.items()))
        if key not in self._savers:  # one Saver per variable mapping, so repeated runs add no ops
            with self.graph.as_default():
                self._savers[key] = tf.train.Saver(var_list=var_list)
        checkpoint_reader.restore_or_explain(self._savers[key], self.sess, prefix)
        self.sess.run(self.iterator.initializer)
        all_labels, all_top5, all_losses = [], [], []
        with pipeline_errors.explained(self.data_path, "validation", self.label_offset,
                                                  self.num_classes):
            while True:
                try:
                    batch_top5, batch_labels, batch_losses = self.sess.run([self.top5, self.labels, self.losses])
                except tf.errors.OutOfRangeError:
                    break
                valid = batch_labels != preprocess.PADDING_LABEL  # real labels were checked to be >= 0
                all_labels.append(batch_labels[valid])
                all_top5.append(batch_top5[valid])
                all_losses.append(batch_losses[valid])
        labels = np.concatenate(all_labels) if all_labels else np.zeros([0], np.int32)
        count = int(labels.size)
        if count == 0:
            raise preprocess.DatasetError("the validation records in %s hold no images" % self.data_path)
        top5 = np.concatenate(all_top5)
        return {"top1": float(np.mean(top5[:, 0] == labels)),
                "top5": float(np.mean(np.any(top5 == labels[:, None], axis=1))),
                "loss": float(np.mean(np.concatenate(all_losses))), "count": count,
                "images_per_second": count / max(time.time() - start, 1e-9),
                "labels": labels, "predictions": top5}


def evaluate(data_path, checkpoint, batch_size, use_ema="auto", model_name=None, num_classes=None, image_size=None,
             dev=None):
    """Evaluator.run's results plus 'checkpoint', 'model_name', 'use_ema', 'num_classes' for the validation split.

    Settings left unset come from the run that wrote the checkpoint, then the checkpoint itself.
    """
    if runtimes.kind_of(checkpoint):  # an exported .pb, SavedModel, .tflite or .onnx
        return file_evaluation.evaluate(data_path, checkpoint, batch_size, num_classes, image_size)
    preprocess.find_record_files(data_path, "validation")  # a bad data path is named as such, first
    prefix = checkpoint_reader.resolve_checkpoint(checkpoint)
    info = preprocess.read_dataset_info(data_path)
    model_name, num_classes, image_size = checkpoint_reader.infer_model(prefix, model_name, num_classes, image_size)
    if info["num_classes"] and info["num_classes"] > num_classes:
        missing_info = preprocess.missing_info_text(data_path)
        if missing_info:
            raise preprocess.DatasetError("%s, but the model has %d classes: %s"
                                          % (missing_info, num_classes, preprocess.MISSING_INFO_FIX))
        raise checkpoint_reader.CheckpointError(
            "the data has %d classes but the model only %d: evaluate with a checkpoint trained on this data"
            % (info["num_classes"], num_classes))
    use_ema_choice, use_ema = use_ema, checkpoint_reader.resolve_use_ema(use_ema, prefix)
    dev = dev or device.resolve(training=False)
    logging.info("device: %s", dev.describe())
    logging.info("evaluating %s (%s, %d classes, image size %d, %s weights) on %s", prefix, model_name,
                 num_classes, image_size, "EMA" if use_ema else "raw", data_path)
    evaluator = Evaluator(data_path, model_name, num_classes, image_size, batch_size, info["label_offset"], dev)
    try:
        for attempt in range(REMOVED_RETRIES):
            try:
                result = evaluator.run(prefix, use_ema)
                break
            except checkpoint_reader.CheckpointRemoved:
                # A folder means "its newest checkpoint": when a running training removed the one found, the
                # newest one now is what was asked for. A prefix names that checkpoint alone.
                if not os.path.isdir(os.path.expanduser(checkpoint)) or attempt + 1 == REMOVED_RETRIES:
                    raise
                newer = checkpoint_reader.resolve_checkpoint(checkpoint)
                logging.warning("%s was removed while it was being read (a training run's retention?): "
                                "evaluating the newest checkpoint now, %s", prefix, newer)
                prefix, use_ema = newer, checkpoint_reader.resolve_use_ema(use_ema_choice, newer)
    finally:
        evaluator.close()
    recorded = info["num_examples"]["validation"]
    if recorded and recorded != result["count"]:
        logging.warning("evaluated %d images but %s records %d validation images: the records were changed "
                        "after conversion", result["count"], preprocess.DATASET_INFO_FILE, recorded)
    result.update(checkpoint=prefix, model_name=model_name, use_ema=use_ema, num_classes=num_classes)
    return result


def class_report(labels, predictions, num_classes):
    """(per_class [(images, correct)], confusion [true][predicted] counts, misclassified record indices)."""
    confusion = np.zeros([num_classes, num_classes], np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    per_class = [(int(confusion[c].sum()), int(confusion[c, c])) for c in range(num_classes)]
    return per_class, confusion, np.nonzero(labels != predictions)[0]


def _report_folder(report_dir, prefix):
    """report_dir, else eval_<step> beside a checkpoint train.py wrote (never into a downloaded or shared
    checkpoint folder), else None."""
    if report_dir:
        return report_dir
    if not run_config.read(prefix):
        return None
    base = os.path.join(os.path.dirname(prefix), "eval_%s" % (checkpoint_reader.checkpoint_step(prefix) or "0"))
    folder, number = base, 1
    while os.path.exists(folder):
        folder, number = "%s.%d" % (base, number), number + 1
    return folder


def write_reports(result, names, report, report_dir=None):
    """Writes per_class.csv, confusion.csv and misclassified.csv (`report` from class_report); returns the
    folder, or None (logged) when there is none to write to."""
    labels, predictions = result["labels"], result["predictions"][:, 0]
    per_class, confusion, wrong = report
    folder = _report_folder(report_dir, result["checkpoint"])
    if folder is None:
        logging.info("per-class reports not written: %s was not written by train.py; pass --report_dir",
                     os.path.dirname(result["checkpoint"]))
        return None
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "per_class.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "class", "images", "correct", "accuracy"])
            for index, (images, correct) in enumerate(per_class):
                if images:
                    writer.writerow([index, names[index], images, correct, "%.4f" % (correct / float(images))])
        with open(os.path.join(folder, "confusion.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted"] + names)
            for index, row in enumerate(confusion):
                writer.writerow([names[index]] + [int(v) for v in row])
        with open(os.path.join(folder, "misclassified.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["record", "true_index", "true_class", "predicted_index", "predicted_class"])
            for record in wrong:
                writer.writerow([int(record), int(labels[record]), names[labels[record]], int(predictions[record]),
                                 names[predictions[record]]])
    except OSError as error:
        logging.warning("reports not written to %s (%s): pass --report_dir", folder, error.strerror)
        return None
    return folder


def _print_class_report(names, report):
    per_class, confusion, wrong = report
    present = [c for c, (images, _) in enumerate(per_class) if images]
    if len(present) > MAX_PRINTED_CLASSES:
        return
    width = max(len(names[c]) for c in present)
    print("Per-class accuracy:")
    for c in present:
        images, correct = per_class[c]
        print("  %-*s %.4f (%d/%d)" % (width, names[c], correct / float(images), correct, images))
    print("Confusion matrix (rows: true class, columns: predicted):")
    print("  %-*s %s" % (width, "", " ".join("%5s" % names[c][:5] for c in present)))
    for c in present:
        print("  %-*s %s" % (width, names[c], " ".join("%5d" % confusion[c, p] for p in present)))
    print("Misclassified records (validation order): %s%s" % (
        " ".join(str(int(i)) for i in wrong[:50]), " ..." if len(wrong) > 50 else ""))


def class_names(prefix, data_path, num_classes):
    """Names from the model's labels.txt, else the data's, else the class indices."""
    path = run_config.labels_file(prefix) or preprocess.read_dataset_info(data_path)["labels_file"]
    names = preprocess.load_labels(path) if path and os.path.isfile(path) else []
    return [names[i] if i < len(names) else str(i) for i in range(num_classes)]


def main_from_flags():
    """Evaluates TMP_MODEL_PATH on TMP_DATA_PATH as the flags say and prints the results."""
    common_flags.check()
    result = evaluate(FLAGS.TMP_DATA_PATH, FLAGS.TMP_MODEL_PATH, FLAGS.batch_size, cli.weights_variant(),
                      FLAGS.model_name, FLAGS.num_classes, FLAGS.image_size)
    if result.get("source"):
        print("Model file: %s" % result["source"])
    else:
        print("Checkpoint: %s (%s, %s weights)" % (result["checkpoint"], result["model_name"],
                                                   "EMA" if result["use_ema"] else "raw"))
    print("Images evaluated: %d" % result["count"])
    print("Top-1 acc: %.4f" % result["top1"])
    print("Top-5 acc: %.4f" % result["top5"])
    names = class_names(result["checkpoint"], FLAGS.TMP_DATA_PATH, result["num_classes"])
    report = class_report(result["labels"], result["predictions"][:, 0], result["num_classes"])
    _print_class_report(names, report)
    folder = write_reports(result, names, report, FLAGS.report_dir)
    if folder:
        print("Reports (per_class.csv, confusion.csv, misclassified.csv): %s" % folder)
    sys.stdout.flush()
    return result
