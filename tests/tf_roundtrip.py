"""Writes and reads a small trained B0 checkpoint; used by test_tf_versions.py in both TensorFlow versions.

    python tests/tf_roundtrip.py --read=DIR_A --out=LOGITS.npz --write=DIR_B
reads DIR_A's checkpoint into LOGITS.npz, then trains and saves a checkpoint (with its own logits) in DIR_B.
"""
import argparse
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import efficientnet_builder as builder  # noqa: E402

MODEL = "efficientnet-b0"
NUM_CLASSES = 10
# 48x48 gives 24x24 maps to the squeeze-excitation means; batch-norm momentum 0 stores real batch
# statistics, so a few steps give weights as sensitive to rounding as the official fixture's.
IMAGE_SIZE = 48
PARAMS = {"num_classes": NUM_CLASSES, "batch_norm_momentum": 0.0}
LOGITS_FILE = "logits.npz"


def _images(seed):
    return np.random.RandomState(seed).uniform(0, 255, (4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


def read_logits(checkpoint_dir):
    """{'raw': logits, 'ema': logits} of the checkpoint, restored by the official variable names."""
    prefix = tf.train.latest_checkpoint(checkpoint_dir)
    logits = {}
    with tf.Graph().as_default():
        outputs, _ = builder.build_model(builder.normalize_images(tf.constant(_images(1)), MODEL), MODEL,
                                         training=False, override_params=PARAMS)
        with tf.Session() as sess:
            for kind, suffix in (("raw", ""), ("ema", "/ExponentialMovingAverage")):
                tf.train.Saver({v.op.name + suffix: v for v in tf.global_variables()}).restore(sess, prefix)
                logits[kind] = sess.run(outputs)
    return logits


def write_checkpoint(checkpoint_dir):
    """Trains 3 RMSProp steps with EMA (as the official recipe saves them), saves, returns read_logits."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        images = builder.normalize_images(tf.constant(_images(0)), MODEL)
        logits, _ = builder.build_model(images, MODEL, training=True, override_params=PARAMS)
        loss = tf.losses.sparse_softmax_cross_entropy(tf.constant([0, 3, 5, 9]), logits)
        global_step = tf.train.get_or_create_global_step()
        optimizer = tf.train.RMSPropOptimizer(1e-3, decay=0.9, momentum=0.9, epsilon=1e-3)
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train_op = optimizer.minimize(loss, global_step=global_step)
        averaged = tf.trainable_variables() + [v for v in tf.global_variables() if "moving_" in v.op.name]
        ema = tf.train.ExponentialMovingAverage(0.9999, num_updates=global_step)
        with tf.control_dependencies([train_op]):
            train_op = ema.apply(averaged)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(3):
                sess.run(train_op)
            tf.train.Saver().save(sess, os.path.join(checkpoint_dir, "model.ckpt"), global_step=global_step)
    logits = read_logits(checkpoint_dir)
    np.savez(os.path.join(checkpoint_dir, LOGITS_FILE), **logits)
    return logits


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--read", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--write", required=True)
    args = parser.parse_args()
    np.savez(args.out, version=tf.__version__, **read_logits(args.read))
    write_checkpoint(args.write)


if __name__ == "__main__":
    main()
