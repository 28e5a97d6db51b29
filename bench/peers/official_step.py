"""The official tensorflow/tpu EfficientNet training step, built from a checkout of that repository.

bench/peers.py builds it beside this package's step. It is main.py's model_fn without the TPU estimator:
in-graph normalisation, label smoothing 0.1, weight decay 1e-5 on non-batch-norm weights, RMSProp from the
official utils.build_optimizer, the learning rate from utils.build_learning_rate, batch-norm updates, EMA.
"""
import contextlib
import importlib
import inspect
import os
import sys

import tensorflow.compat.v1 as tf

MEAN_RGB = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STDDEV_RGB = [0.229 * 255, 0.224 * 255, 0.225 * 255]
# The official modules share names with this repository's top-level ones.
SHARED_NAMES = ("efficientnet_builder", "efficientnet_model", "utils", "condconv", "condconv.condconv_layers",
                "lars_optimizer")


def _accept_mask_argument():
    """The official TpuBatchNormalization passes `mask=` to Keras' _moments, which TF 1.15's lacks (a TypeError
    since the official code's 2022-12 change); drop the argument there, unchanged otherwise."""
    moments = tf.layers.BatchNormalization._moments
    if "mask" in inspect.signature(moments).parameters:
        return

    def moments_without_mask(self, inputs, reduction_axes, keep_dims, mask=None):
        return moments(self, inputs, reduction_axes, keep_dims=keep_dims)
    tf.layers.BatchNormalization._moments = moments_without_mask


@contextlib.contextmanager
def _official_modules(official_dir):
    """Imports resolve to the official modules inside the block; this repository's are restored after it."""
    ours = {name: sys.modules.pop(name) for name in SHARED_NAMES if name in sys.modules}
    sys.path.insert(0, official_dir)
    try:
        yield
    finally:
        sys.path.remove(official_dir)
        for name in SHARED_NAMES:
            sys.modules.pop(name, None)
        sys.modules.update(ours)


def check_official_dir(official_dir):
    """None when official_dir holds the official EfficientNet code, else what is wrong."""
    if not os.path.isfile(os.path.join(official_dir, "efficientnet_builder.py")):
        return "%s has no efficientnet_builder.py: give models/official/efficientnet of a tensorflow/tpu checkout" % (
            official_dir)
    return None


def build(official_dir, model_name, images, labels):
    """The official training op on `images` (float 0..255) and 1000-class `labels`, in the current graph."""
    batch_size = int(images.shape[0])
    with _official_modules(os.path.abspath(official_dir)):
        efficientnet_builder = importlib.import_module("efficientnet_builder")
        utils = importlib.import_module("utils")
        _accept_mask_argument()
        features = (images - tf.constant(MEAN_RGB, shape=[1, 1, 1, 3])) / tf.constant(STDDEV_RGB,
                                                                                        shape=[1, 1, 1, 3])
        logits, _ = efficientnet_builder.build_model(features, model_name, training=True)
        loss = tf.losses.softmax_cross_entropy(tf.one_hot(labels, 1000), logits, label_smoothing=0.1)
        loss += 1e-5 * tf.add_n([tf.nn.l2_loss(v) for v in tf.trainable_variables()
                                 if "batch_normalization" not in v.name])
        global_step = tf.train.get_or_create_global_step()
        optimizer = utils.build_optimizer(utils.build_learning_rate(0.016 * batch_size / 256, global_step, 1000))
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train_op = optimizer.minimize(loss, global_step)
        ema = tf.train.ExponentialMovingAverage(0.9999, num_updates=global_step)
        with tf.control_dependencies([train_op]):
            return ema.apply(tf.trainable_variables() + tf.moving_average_variables())
