"""Training-step throughput of the step train.py runs (effnet/training/train_step.py: label smoothing,
weight decay, Nesterov momentum, batch-norm updates, EMA), at train.py's default settings.

Synthetic images live in GPU/CPU memory as a variable, so the figure measures the step without the input
pipeline.
    python bench/train_step.py --model_name=efficientnet-b0 --batch_size=16 --image_size=224
    python bench/train_step.py --device=gpu --gpu_amp --xla --batch_size=256
Device, mixed precision and XLA go through effnet/devices/device.py, as in train.py.
"""
import os
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import efficientnet_builder  # noqa: E402
from effnet.devices import device  # noqa: E402
from effnet.training import train_step  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """This benchmark's flags and the device's (effnet/devices/device.py), as train.py has them."""
    device.define_flags()
    flags.DEFINE_enum("model_name", "efficientnet-b0", efficientnet_builder.MODEL_NAMES, "Model to benchmark.")
    flags.DEFINE_integer("batch_size", 16, "Images per training step.")
    flags.DEFINE_integer("image_size", 0, "Input resolution; 0 means the model's own.")
    flags.DEFINE_integer("num_classes", 1000, "Classifier width.")
    flags.DEFINE_integer("warmup_steps", 3, "Steps run before timing starts (graph optimisation, allocation).")
    flags.DEFINE_integer("steps", 10, "Timed steps.")


def main(_):
    image_size = FLAGS.image_size or efficientnet_builder.model_spec(FLAGS.model_name).resolution
    try:
        dev = device.resolve(training=True)
    except device.DeviceError as error:
        sys.exit("error: %s" % error)
    rng = np.random.RandomState(0)
    images = tf.Variable(rng.uniform(0, 255, (FLAGS.batch_size, image_size, image_size, 3)).astype(np.float32),
                         trainable=False, name="synthetic_images")
    labels = tf.Variable(rng.randint(0, FLAGS.num_classes, FLAGS.batch_size).astype(np.int32),
                         trainable=False, name="synthetic_labels")
    step = train_step.TrainStep(images, labels, dev, FLAGS.model_name, FLAGS.num_classes, train_step.StepSettings(),
                                steps_per_epoch=1000, total_steps=FLAGS.warmup_steps + FLAGS.steps)
    train_op = step.train_op
    with tf.Session(config=dev.session_config()) as sess:
        sess.run(tf.global_variables_initializer())
        for _ in range(FLAGS.warmup_steps):
            sess.run(train_op)
        start = time.time()
        for _ in range(FLAGS.steps):
            sess.run(train_op)
        elapsed = time.time() - start
    print("model=%s image_size=%d batch_size=%d steps=%d tensorflow=%s device=%s precision=%s xla=%s"
          % (FLAGS.model_name, image_size, FLAGS.batch_size, FLAGS.steps, tf.__version__, dev.name, dev.precision,
             FLAGS.xla and dev.name == "gpu"))
    print("train step: %.3f s/step, %.2f images/s" % (elapsed / FLAGS.steps,
                                                      FLAGS.batch_size * FLAGS.steps / elapsed))


if __name__ == "__main__":
    define_flags()
    app.run(main)
