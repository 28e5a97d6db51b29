"""Evaluation of a checkpoint on the validation split: every image exactly once, top-1 and top-5."""
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags, logging

import checkpoint_utils
import common_flags  # noqa: F401  (defines the shared flags)
import device
import efficientnet_builder
import preprocess

flags.DEFINE_enum("use_ema", "auto", checkpoint_utils.USE_EMA_CHOICES,
                  "Evaluate the EMA shadows of the weights; auto = when the checkpoint has them.")
FLAGS = flags.FLAGS


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
        var_list, _ = checkpoint_utils.model_variables_restore_map(prefix, self.model_variables, use_ema)
        key = tuple(sorted((name, variable.op.name) for name, variable in var_list.items()))
        if key not in self._savers:  # one Saver per variable mapping, so repeated runs add no ops
            with self.graph.as_default():
                self._savers[key] = tf.train.Saver(var_list=var_list)
        checkpoint_utils.restore_or_explain(self._savers[key], self.sess, prefix)
        self.sess.run(self.iterator.initializer)
        all_labels, all_top5, all_losses = [], [], []
        while True:
            try:
                batch_top5, batch_labels, batch_losses = self.sess.run([self.top5, self.labels, self.losses])
            except tf.errors.OutOfRangeError:
                break
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                explained = preprocess.explain_pipeline_error(error, self.data_path, "validation",
                                                              self.label_offset, self.num_classes)
                if explained is None:
                    raise
                raise explained
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
    preprocess.find_record_files(data_path, "validation")  # a bad data path is named as such, first
    prefix = checkpoint_utils.resolve_checkpoint(checkpoint)
    info = preprocess.read_dataset_info(data_path)
    model_name, num_classes, image_size = checkpoint_utils.infer_model(prefix, model_name, num_classes, image_size)
    if info["num_classes"] and info["num_classes"] > num_classes:
        raise checkpoint_utils.CheckpointError(
            "the data has %d classes but the model only %d: evaluate with a checkpoint trained on this data"
            % (info["num_classes"], num_classes))
    use_ema = checkpoint_utils.resolve_use_ema(use_ema, prefix)
    dev = dev or device.resolve(training=False)
    logging.info("device: %s", dev.describe())
    logging.info("evaluating %s (%s, %d classes, image size %d, %s weights) on %s", prefix, model_name,
                 num_classes, image_size, "EMA" if use_ema else "raw", data_path)
    evaluator = Evaluator(data_path, model_name, num_classes, image_size, batch_size, info["label_offset"], dev)
    try:
        result = evaluator.run(prefix, use_ema)
    finally:
        evaluator.close()
    recorded = info["num_examples"]["validation"]
    if recorded and recorded != result["count"]:
        logging.warning("evaluated %d images but %s records %d validation images: the records were changed "
                        "after conversion", result["count"], preprocess.DATASET_INFO_FILE, recorded)
    result.update(checkpoint=prefix, model_name=model_name, use_ema=use_ema, num_classes=num_classes)
    return result


def main_from_flags():
    """Evaluates TMP_MODEL_PATH on TMP_DATA_PATH as the flags say and prints the results."""
    result = evaluate(FLAGS.TMP_DATA_PATH, FLAGS.TMP_MODEL_PATH, FLAGS.batch_size, FLAGS.use_ema,
                      FLAGS.model_name, FLAGS.num_classes, FLAGS.image_size)
    print("Checkpoint: %s (%s, %s weights)" % (result["checkpoint"], result["model_name"],
                                               "EMA" if result["use_ema"] else "raw"))
    print("Images evaluated: %d" % result["count"])
    print("Top-1 acc: %.4f" % result["top1"])
    print("Top-5 acc: %.4f" % result["top5"])
    sys.stdout.flush()
    return result
