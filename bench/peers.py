"""This package's training step beside its peers', interleaved in one run on one machine, with ratios.

Contenders, each built once and then timed in turns (every round runs --steps steps of each, so a machine
that slows down or speeds up during the run weighs on all of them alike; the median round counts):
  package               the step train.py runs (effnet/training/train_step.py) on this TensorFlow, CPU
  package_tf_gradients  the same with --nocpu_fast_gradients (TensorFlow's own gradients)
  official              the tensorflow/tpu graph (bench/peers/official_step.py) from --official_dir,
                        skipped with a message when not given
  pytorch               efficientnet_pytorch (bench/peers/pytorch_step.py) in a --torch_python process,
                        skipped when that python is missing

    python bench/peers.py --official_dir=TPU_CHECKOUT/models/official/efficientnet --rounds=5
Run it under each TensorFlow build to compare (e.g. a oneDNN one): figures from one run only compare
with each other.
"""
import os
import statistics
import subprocess
import sys
import time
import types

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow.compat.v1 as tf
from absl import flags, logging

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "peers"))
import official_step  # noqa: E402

import efficientnet_builder  # noqa: E402
from effnet import cli  # noqa: E402
from effnet.devices import device  # noqa: E402
from effnet.training import train_step  # noqa: E402

DEFAULT_TORCH_PYTHON = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                    "efficientnet-tf", "venv-sources", "bin", "python")
FLAGS = flags.FLAGS


class PeerError(Exception):
    """A contender that cannot run as asked; the message says what to give."""


def define_flags():
    flags.DEFINE_enum("model_name", "efficientnet-b0", efficientnet_builder.MODEL_NAMES, "Model to benchmark.")
    flags.DEFINE_string("official_dir", None, "models/official/efficientnet of a tensorflow/tpu checkout.")
    flags.DEFINE_string("torch_python", DEFAULT_TORCH_PYTHON, "A python with torch and efficientnet_pytorch.")
    flags.DEFINE_integer("rounds", 5, "Rounds; each times --steps steps of every contender in turn.")
    flags.DEFINE_integer("steps", 3, "Timed steps per contender and round.")
    flags.DEFINE_integer("warmup_steps", 2, "Steps run once before the rounds (graph optimisation, allocation).")
    flags.DEFINE_integer("batch_size", 16, "Images per training step.")
    flags.DEFINE_integer("image_size", 224, "Input resolution.")
    device.define_flags()


class TensorFlowContender(object):
    """A training op in its own graph and session."""

    def __init__(self, build, session_config):
        self.graph = tf.Graph()
        with self.graph.as_default():
            train_op = build()
            self.session = tf.Session(config=session_config)
            self.session.run(tf.global_variables_initializer())
        self.run_op = train_op
        self.seconds(FLAGS.warmup_steps)

    def seconds(self, steps):
        start = time.time()
        for _ in range(steps):
            self.session.run(self.run_op)
        return time.time() - start


class TorchContender(object):
    """bench/peers/pytorch_step.py --serve in its own process, timed on demand."""

    def __init__(self, python):
        self.process = subprocess.Popen(
            [python, os.path.join(HERE, "peers", "pytorch_step.py"), "--serve", "--batch_size=%d" % FLAGS.batch_size,
             "--image_size=%d" % FLAGS.image_size, "--steps=%d" % FLAGS.steps,
             "--warmup_steps=%d" % FLAGS.warmup_steps, "--model_name=" + FLAGS.model_name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
        started = self.process.stdout.readline().strip()
        if not started:
            raise PeerError("the PyTorch contender did not start (%s)" % FLAGS.torch_python)
        print("pytorch: " + started, flush=True)

    def seconds(self, steps):
        assert steps == FLAGS.steps
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())


def synthetic_batch():
    """The same fixed images (float 0..255) and 1000-class labels for every contender, held in variables so
    that no step pays for feeding them."""
    rng = np.random.RandomState(0)
    size = FLAGS.image_size
    images = tf.Variable(rng.uniform(0, 255, (FLAGS.batch_size, size, size, 3)).astype(np.float32), trainable=False)
    labels = tf.Variable(rng.randint(0, 1000, FLAGS.batch_size).astype(np.int32), trainable=False)
    return images, labels


def package_step(fast_gradients):
    values = dict(FLAGS.flag_values_dict(), device="cpu", cpu_fast_gradients=fast_gradients)
    dev = device.resolve(types.SimpleNamespace(**values), training=True)

    def build():
        images, labels = synthetic_batch()
        return train_step.TrainStep(images, labels, dev, FLAGS.model_name, 1000, train_step.StepSettings(),
                                    steps_per_epoch=1000, total_steps=1000).train_op
    return build, dev.session_config()


def contenders():
    """name -> contender for every contender that can run here; a line for each that cannot."""
    built = {"package": TensorFlowContender(*package_step(True)),
             "package_tf_gradients": TensorFlowContender(*package_step(False))}
    if not FLAGS.official_dir:
        print("official: skipped, give --official_dir (models/official/efficientnet of a tensorflow/tpu checkout)")
    else:
        built["official"] = TensorFlowContender(
            lambda: official_step.build(FLAGS.official_dir, FLAGS.model_name, *synthetic_batch()),
            tf.ConfigProto())
    if os.path.exists(FLAGS.torch_python):
        built["pytorch"] = TorchContender(FLAGS.torch_python)
    else:
        print("pytorch: skipped, %s not found (bash scripts/make_sources_venv.sh builds it)" % FLAGS.torch_python)
    return built


def main(_):
    tf.logging.set_verbosity(tf.logging.ERROR)
    logging.set_verbosity(logging.ERROR)  # the official code logs every block it builds
    print("%s, batch %d, %d px, TensorFlow %s, %d cores" % (FLAGS.model_name, FLAGS.batch_size, FLAGS.image_size,
                                                          tf.__version__, os.cpu_count()), flush=True)
    problem = FLAGS.official_dir and official_step.check_official_dir(FLAGS.official_dir)
    if problem:
        raise PeerError("--official_dir: " + problem)
    runs = contenders()
    rates = {name: [] for name in runs}
    for round_index in range(FLAGS.rounds):
        for name, contender in runs.items():
            rates[name].append(FLAGS.batch_size * FLAGS.steps / contender.seconds(FLAGS.steps))
        print("round %d: %s" % (round_index + 1, ", ".join("%s %.2f" % (name, rates[name][-1]) for name in runs)),
              flush=True)
    median = {name: statistics.median(values) for name, values in rates.items()}
    print("\nimages/s, median of %d rounds (min..max):" % FLAGS.rounds)
    for name, values in rates.items():
        print("  %-22s %7.2f  (%.2f..%.2f)" % (name, median[name], min(values), max(values)))
    print("ratios of the medians:")
    for peer in ("package_tf_gradients", "official", "pytorch"):
        if peer in median:
            print("  package / %-22s %.2fx" % (peer, median["package"] / median[peer]))


if __name__ == "__main__":
    cli.run(main, errors=(PeerError, device.DeviceError), define_flags=define_flags)
