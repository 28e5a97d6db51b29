"""Shared test setup: the repo on sys.path, the official fixture's location, quiet TensorFlow."""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")
FIXTURE_DIR = os.path.join(SHARED_DIR, "fixtures", "official_b0")
NPU_DOUBLE_DIR = os.path.join(REPO_ROOT, "tests", "npu_double")

# Modules whose tests run in-process, in about two minutes together on 2 cores; every other module starts
# the package's scripts (training runs, launchers, conversions) and is marked `slow`:
# `bash scripts/run_tests.sh -m "not slow"` runs the fast part alone.
IN_PROCESS_MODULES = {"test_autoaugment", "test_cli", "test_demo_data", "test_device", "test_make_rank_table",
                      "test_preprocess", "test_recipes", "test_train_step", "test_training_policy"}

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__ not in IN_PROCESS_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def fixture_dir():
    if not os.path.isdir(FIXTURE_DIR):
        pytest.fail("official fixture missing: expected %s (../shared beside the repo)" % FIXTURE_DIR)
    return FIXTURE_DIR

DEMO_DATA = os.path.join(REPO_ROOT, "data", "demo")


def python_env(extra_env=None):
    """The environment the package's scripts run in under test: the repo importable, CPU only, TF quiet."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra_env or {})
    return env


def run_python(args, extra_env=None, timeout=600, **kwargs):
    """Runs `python args...` from the repo root, as a user would, on the CPU; returns CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable] + list(args), cwd=REPO_ROOT, env=python_env(extra_env),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout,
                          **kwargs)


def device_flags(**overrides):
    """effnet/devices/device.py's flags at their defaults, with overrides, as the object device.for_name() and
    resolve() read. Defines those flags in absl's FLAGS the first time (the devices read the defaults there
    to tell which flags a user changed)."""
    import types

    from absl import flags

    from effnet.devices import device

    if "device" not in flags.FLAGS:
        device.define_flags()
    values = {flag.name: flag.default for flag in flags.FLAGS.get_flags_for_module(device)}
    unknown = set(overrides) - set(values)
    assert not unknown, unknown
    values.update(overrides)
    return types.SimpleNamespace(**values)


def relative_error(ours, reference):
    """Largest absolute difference over the reference's largest magnitude."""
    import numpy as np

    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def read_case_log(path):
    """{key: value} of a ModelZoo ${CaseName}.log's `Key = value` lines."""
    with open(path) as f:
        return dict(line.rstrip("\n").split(" = ", 1) for line in f if line.strip())


def listed_checkpoint_steps(model_dir):
    """Steps of the checkpoints the folder's `checkpoint` state file lists, oldest first."""
    import tensorflow.compat.v1 as tf

    state = tf.train.get_checkpoint_state(str(model_dir))
    return [] if state is None else [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]


def saved_checkpoint_steps(folder):
    """Steps of the model.ckpt-<step> checkpoints on disk in folder (damaged ones included), sorted."""
    from effnet.checkpoints import checkpoint_reader

    return sorted(checkpoint_reader.checkpoint_step(p) for p in checkpoint_reader.checkpoint_prefixes(str(folder))
                  if os.path.basename(p).startswith("model.ckpt-"))


@pytest.fixture(scope="session")
def official_b0(fixture_dir):
    """The fixture's golden.json entries and golden.npz arrays in one dict, plus the checkpoint prefix."""
    import json

    import numpy as np

    with open(os.path.join(fixture_dir, "golden.json")) as handle:
        info = json.load(handle)
    arrays = np.load(os.path.join(fixture_dir, "golden.npz"))
    info.update({key: arrays[key] for key in arrays.files})
    info["prefix"] = os.path.join(fixture_dir, info["checkpoint"])
    return info


@pytest.fixture(scope="session")
def b0_outputs_here(official_b0):
    """This package's B0 on the fixture photos, computed on this machine once per session, from one
    graph restored twice: {'logits_raw', 'features_raw', 'logits_ema', 'features_ema'}, plus the
    graph's facts: 'variables' ([name, shape] in creation order), 'trainable' (count) and
    'endpoint_shapes' ({endpoint: shape})."""
    import tensorflow.compat.v1 as tf

    import efficientnet_builder
    from effnet.checkpoints import checkpoint_reader

    outputs = {}
    with tf.Graph().as_default():
        images = tf.constant(official_b0["images"])
        logits, endpoints = efficientnet_builder.build_model(
            efficientnet_builder.normalize_images(images, official_b0["model"]), official_b0["model"],
            training=False)
        outputs["variables"] = [[v.op.name, v.shape.as_list()] for v in tf.global_variables()]
        outputs["trainable"] = len(tf.trainable_variables())
        outputs["endpoint_shapes"] = {name: tensor.shape.as_list() for name, tensor in endpoints.items()}
        outputs["logits_name"] = logits.op.name
        with tf.Session() as sess:
            for kind, use_ema in (("raw", False), ("ema", True)):
                checkpoint_reader.restore(sess, official_b0["prefix"], tf.global_variables(), use_ema)
                outputs["logits_" + kind], outputs["features_" + kind] = sess.run([logits, endpoints["features"]])
    return outputs
