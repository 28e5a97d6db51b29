"""test.py on an exported file (.pb, SavedModel folder, .tflite, .onnx): the same validation pipeline, the same
padding rule and the same result fields as the checkpoint evaluation, so the two print comparable figures."""
import time

import numpy as np
import tensorflow.compat.v1 as tf

import preprocess
from effnet.data import pipeline_errors
from effnet.export import runtimes


def evaluate(data_path, path, batch_size, num_classes=None, image_size=None):
    """evaluation.evaluate's result fields for the exported model at `path` on the validation split."""
    preprocess.find_record_files(data_path, "validation")
    runtime = runtimes.open_model(path, num_classes=num_classes, image_size=image_size)
    try:
        info = preprocess.read_dataset_info(data_path)
        if info["num_classes"] and info["num_classes"] > runtime.num_classes:
            missing_info = preprocess.missing_info_text(data_path)
            if missing_info:
                raise preprocess.DatasetError("%s, but %s has %d classes: %s" % (
                    missing_info, path, runtime.num_classes, preprocess.MISSING_INFO_FIX))
            raise runtimes.ModelFileError("the data has %d classes but %s only %d: evaluate a model trained on this "
                                          "data" % (info["num_classes"], path, runtime.num_classes))
        start = time.time()
        labels, top5, losses = [], [], []
        with tf.Graph().as_default():
            dataset = preprocess.build_dataset(data_path, is_training=False, image_size=runtime.image_size,
                                               batch_size=batch_size, label_offset=info["label_offset"],
                                               num_classes=runtime.num_classes)
            batch = tf.data.make_one_shot_iterator(dataset).get_next()
            with tf.Session() as sess, pipeline_errors.explained(
                    data_path, "validation", info["label_offset"], runtime.num_classes):
                while True:
                    try:
                        images, batch_labels = sess.run(batch)
                    except tf.errors.OutOfRangeError:
                        break
                    valid = batch_labels != preprocess.PADDING_LABEL
                    if not valid.any():
                        continue
                    logits = runtime.logits(images[valid])
                    labels.append(batch_labels[valid])
                    top5.append(np.argsort(-logits, axis=1, kind="stable")[:, :min(5, runtime.num_classes)])
                    shifted = logits - logits.max(axis=1, keepdims=True)
                    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
                    losses.append(-log_probs[np.arange(len(logits)), batch_labels[valid]])
    finally:
        runtime.close()
    if not labels:
        raise preprocess.DatasetError("the validation records in %s hold no images" % data_path)
    labels, top5 = np.concatenate(labels), np.concatenate(top5)
    return {"top1": float(np.mean(top5[:, 0] == labels)),
            "top5": float(np.mean(np.any(top5 == labels[:, None], axis=1))),
            "loss": float(np.mean(np.concatenate(losses))), "count": int(labels.size),
            "images_per_second": labels.size / max(time.time() - start, 1e-9), "labels": labels,
            "predictions": top5, "checkpoint": path, "model_name": runtime.model_name, "use_ema": None,
            "num_classes": runtime.num_classes, "source": runtime.source}
