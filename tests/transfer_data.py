"""A small dataset that needs transfer learning, made offline from the bundled demo records: a few
training digits per class (scratch training stays poor at a few dozen steps) and the demo's whole
validation split."""
import json
import os
import shutil

import tensorflow.compat.v1 as tf

import preprocess
from conftest import DEMO_DATA


def _label(serialized):
    example = tf.train.Example.FromString(serialized)
    return example.features.feature["image/class/label"].int64_list.value[0]


def few_shot_digits(output_dir, train_per_class):
    """Writes train-00000-of-00001 (train_per_class images of each class), the demo's validation split,
    labels.txt and dataset_info.json into output_dir; returns output_dir."""
    os.makedirs(output_dir, exist_ok=True)
    kept, taken = [], {}
    for path in preprocess.find_record_files(DEMO_DATA, "train"):
        for record in tf.io.tf_record_iterator(path):
            label = _label(record)
            if taken.get(label, 0) < train_per_class:
                taken[label] = taken.get(label, 0) + 1
                kept.append(record)
    with tf.io.TFRecordWriter(os.path.join(output_dir, "train-00000-of-00001")) as writer:
        for record in kept:
            writer.write(record)
    validation = [record for path in preprocess.find_record_files(DEMO_DATA, "validation")
                  for record in tf.io.tf_record_iterator(path)]
    with tf.io.TFRecordWriter(os.path.join(output_dir, "validation-00000-of-00001")) as writer:
        for record in validation:
            writer.write(record)
    shutil.copyfile(os.path.join(DEMO_DATA, "labels.txt"), os.path.join(output_dir, "labels.txt"))
    with open(os.path.join(DEMO_DATA, "dataset_info.json")) as handle:
        info = json.load(handle)
    info["num_examples"] = {"train": len(kept), "validation": len(validation)}
    info["source"] = "%d training digits per class of the demo data" % train_per_class
    with open(os.path.join(output_dir, "dataset_info.json"), "w") as handle:
        json.dump(info, handle, indent=2)
    return output_dir
