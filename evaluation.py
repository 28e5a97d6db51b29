"""Evaluation of a checkpoint on the validation split: every image exactly once, top-1 and top-5."""
import sys

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


def evaluate(data_path, checkpoint, batch_size, use_ema="auto", model_name=None, num_classes=None, image_size=None,
             dev=None):
    """Returns {'top1', 'top5', 'count', 'checkpoint', 'model_name', 'use_ema'} for the validation split.

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
    with tf.Graph().as_default():
        dataset = preprocess.build_dataset(data_path, is_training=False, image_size=image_size,
                                           batch_size=batch_size, label_offset=info["label_offset"],
                                           num_classes=num_classes)
        iterator = tf.data.make_initializable_iterator(dataset)
        images, labels = iterator.get_next()
        logits, _ = efficientnet_builder.build_model(
            efficientnet_builder.normalize_images(images, model_name), model_name, training=False,
            override_params={"num_classes": num_classes, "dropout_fn": dev.dropout_fn()})
        model_variables = tf.global_variables()
        _, top5 = tf.nn.top_k(logits, k=min(5, num_classes))
        correct1 = correct5 = count = 0
        with tf.Session(config=dev.session_config()) as sess:
            checkpoint_utils.restore(sess, prefix, model_variables, use_ema)
            sess.run(iterator.initializer)
            while True:
                try:
                    batch_top5, batch_labels = sess.run([top5, labels])
                except tf.errors.OutOfRangeError:
                    break
                except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                    explained = preprocess.explain_pipeline_error(error, data_path, "validation",
                                                                  info["label_offset"], num_classes)
                    if explained is None:
                        raise
                    raise explained
                valid = batch_labels != preprocess.PADDING_LABEL  # real labels were checked to be >= 0
                batch_top5, batch_labels = batch_top5[valid], batch_labels[valid]
                correct1 += int(np.sum(batch_top5[:, 0] == batch_labels))
                correct5 += int(np.sum(np.any(batch_top5 == batch_labels[:, None], axis=1)))
                count += int(valid.sum())
    if count == 0:
        raise preprocess.DatasetError("the validation records in %s hold no images" % data_path)
    recorded = info["num_examples"]["validation"]
    if recorded and recorded != count:
        logging.warning("evaluated %d images but %s records %d validation images: the records were changed "
                        "after conversion", count, preprocess.DATASET_INFO_FILE, recorded)
    return {"top1": correct1 / float(count), "top5": correct5 / float(count), "count": count,
            "checkpoint": prefix, "model_name": model_name, "use_ema": use_ema}


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
