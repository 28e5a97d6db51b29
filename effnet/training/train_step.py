"""The training step as a function of plain settings, not of flags: train.py, bench/train_step.py and the
tests build the same step (label smoothing, weight decay, optimizer, batch-norm updates, EMA)."""
import collections

import tensorflow.compat.v1 as tf
from absl import logging

import efficientnet_builder
from effnet.training import training_policy

# Defaults are train.py's flag defaults; None means "the model's own" (dropout, survival) or "from the run
# length" (batch-norm momentum).
StepSettings = collections.namedtuple("StepSettings", [
    "learning_rate", "lr_schedule", "warmup_epochs", "optimizer", "momentum", "weight_decay", "label_smoothing",
    "moving_average_decay", "dropout_rate", "batch_norm_momentum", "survival_prob", "freeze_base"])
StepSettings.__new__.__defaults__ = (0.01, "constant", 0.0, "momentum", 0.9, 1e-5, 0.1, 0.9999, None, None, None,
                                     False)
OPTIMIZERS = ("momentum", "rmsprop", "adam", "sgd")


def build_optimizer(name, learning_rate, momentum):
    """The tf.train optimizer called `name` (one of OPTIMIZERS)."""
    if name == "momentum":
        return tf.train.MomentumOptimizer(learning_rate, momentum, use_nesterov=True)
    if name == "rmsprop":
        return tf.train.RMSPropOptimizer(learning_rate, decay=0.9, momentum=momentum, epsilon=1e-3)
    if name == "adam":
        return tf.train.AdamOptimizer(learning_rate)
    if name == "sgd":
        return tf.train.GradientDescentOptimizer(learning_rate)
    raise ValueError("unknown optimizer %r: use one of %s" % (name, ", ".join(OPTIMIZERS)))


def is_moving_statistic(variable):
    return "moving_mean" in variable.op.name or "moving_variance" in variable.op.name


class TrainStep(object):
    """Model, loss, train op and EMA on `images` (float 0..255) and integer `labels`, in the current graph.

    Attributes the loop and the savers use: loss, accuracy, learning_rate, global_step, train_op,
    model_variables, shadows (EMA averages, empty without EMA), zero_head and ema_sync (None without EMA).
    """

    def __init__(self, images, labels, dev, model_name, num_classes, settings, steps_per_epoch, total_steps):
        override_params = {"num_classes": num_classes, "dropout_fn": dev.dropout_fn()}
        if settings.dropout_rate is not None:
            override_params["dropout_rate"] = settings.dropout_rate
        if settings.survival_prob is not None:
            override_params["survival_prob"] = settings.survival_prob
        override_params["batch_norm_momentum"] = (
            training_policy.batch_norm_momentum(total_steps) if settings.batch_norm_momentum is None
            else settings.batch_norm_momentum)
        logging.info("batch-norm momentum %.3g", override_params["batch_norm_momentum"])
        with tf.get_default_graph().gradient_override_map(dev.gradient_overrides()):
            logits, _ = efficientnet_builder.build_model(
                efficientnet_builder.normalize_images(images, model_name), model_name,
                training=not settings.freeze_base, override_params=override_params)
        self.model_variables = tf.global_variables()
        model_trainable = tf.trainable_variables()
        head = [v for v in model_trainable if "/head/dense/" in v.op.name]
        # A head trained anew on pretrained features starts at zero (train.py runs this after loading them).
        self.zero_head = tf.group(*[tf.assign(v, tf.zeros_like(v)) for v in head])
        trained = head if settings.freeze_base else model_trainable

        cross_entropy = tf.losses.softmax_cross_entropy(
            tf.one_hot(labels, num_classes), logits, label_smoothing=settings.label_smoothing)
        decayed = [tf.nn.l2_loss(v) for v in trained if "batch_normalization" not in v.op.name]
        self.loss = cross_entropy + settings.weight_decay * tf.add_n(decayed)
        self.accuracy = tf.reduce_mean(tf.cast(tf.nn.in_top_k(logits, labels, 1), tf.float32))

        self.global_step = tf.train.get_or_create_global_step()
        self.learning_rate = training_policy.learning_rate(
            self.global_step, settings.learning_rate, settings.lr_schedule, steps_per_epoch, total_steps,
            settings.warmup_epochs)
        optimizer = dev.wrap_optimizer(build_optimizer(settings.optimizer, self.learning_rate, settings.momentum))
        update_ops = [] if settings.freeze_base else tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.control_dependencies(update_ops):
            train_op = optimizer.minimize(self.loss, global_step=self.global_step, var_list=trained)
        moving_statistics = [v for v in self.model_variables if is_moving_statistic(v)]
        if not settings.freeze_base:
            # With several ranks each one updates the batch-norm statistics from its own batch: average
            # them after every step, so that all ranks (and the checkpoint) hold the same values.
            with tf.control_dependencies([train_op]):
                train_op = dev.average_over_ranks_op(moving_statistics) or train_op

        self.ema_sync = None
        self.shadows = []
        if settings.moving_average_decay > 0:
            averaged = model_trainable + moving_statistics
            ema = tf.train.ExponentialMovingAverage(settings.moving_average_decay, num_updates=self.global_step)
            with tf.control_dependencies([train_op]):
                train_op = ema.apply(averaged)
            # After loading pretrained weights the shadows must start from them, not from the random init.
            self.ema_sync = tf.group(*[tf.assign(ema.average(v), v) for v in averaged])
            self.shadows = [ema.average(v) for v in averaged]
        self.train_op = train_op
