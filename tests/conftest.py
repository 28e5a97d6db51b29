"""Shared test setup: the repo on sys.path, the official fixture's location, quiet TensorFlow."""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")
FIXTURE_DIR = os.path.join(SHARED_DIR, "fixtures", "official_b0")
NPU_DOUBLE_DIR = os.path.join(REPO_ROOT, "tests", "npu_double")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


@pytest.fixture(scope="session")
def fixture_dir():
    if not os.path.isdir(FIXTURE_DIR):
        pytest.fail("official fixture missing: expected %s (../shared beside the repo)" % FIXTURE_DIR)
    return FIXTURE_DIR

DEMO_DATA = os.path.join(REPO_ROOT, "data", "demo")


def run_python(args, extra_env=None, timeout=600, **kwargs):
    """Runs `python args...` from the repo root, as a user would, on the CPU; returns CompletedProcess."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra_env or {})
    return subprocess.run([sys.executable] + list(args), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout, **kwargs)


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

    import checkpoint_utils
    import efficientnet_builder

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
                checkpoint_utils.restore(sess, official_b0["prefix"], tf.global_variables(), use_ema)
                outputs["logits_" + kind], outputs["features_" + kind] = sess.run([logits, endpoints["features"]])
    return outputs
