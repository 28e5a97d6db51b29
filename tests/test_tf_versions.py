"""TensorFlow 1.15 and 2.x: interchangeable checkpoints, and logits as exact as TF 1.15's on both.

Each version uses its native sigmoid and mean kernels (effnet/tf_compat.py), which round differently,
so agreement is judged against a float64 reference: a version's error must stay within 2.5 times TF
1.15's (the official code's float32) error on the same checkpoint and images. The cross-version test
runs this suite's python and the other TensorFlow line's (.venv for 1.15, .venv-tf2 for 2.x, or
$EFFICIENTNET_OTHER_PYTHON); scripts/run_tests.sh builds both.
"""
import os
import subprocess

import float64_reference
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_roundtrip

import efficientnet_builder as builder
from conftest import REPO_ROOT, relative_error
from effnet import tf_compat

# How much further from the float64 answer than TF 1.15's float32 a version's logits may be. Ratios
# of TF 2.15's error to TF 1.15's: here 0.64 to 1.47 (see below); the official fixture 0.17 (raw) and
# 0.17 (EMA) (tests/test_model.py); issue #22 measured up to 2.16 (raw logits of a 10-class B0 written
# by the official code). A wrong layer, constant or kernel is off by orders of magnitude.
ERROR_RATIO_BOUND = 2.5

# Inputs and the outputs of TF 1.15.5's CPU Sigmoid / swish kernels for them (float32 bit patterns), in
# a large tensor: TF 1.15 rounds tensors of a few elements differently (7.75 -> 0x1.ffc792p-1).
TF115_SIGMOID_TABLE = [
    (-30.0, 0.0, -0.0),
    (-17.973114013671875, float.fromhex("0x1p-23"), float.fromhex("-0x1.1f91ep-19")),
    (-12.5, float.fromhex("0x1.f8p-19"), float.fromhex("-0x1.89cp-15")),
    (-9.0, float.fromhex("0x1.02dp-13"), float.fromhex("-0x1.232ap-10")),
    (-3.25, float.fromhex("0x1.31c82p-5"), float.fromhex("-0x1.f0e534p-4")),
    (-0.699999988079071, float.fromhex("0x1.53c698p-2"), float.fromhex("-0x1.dbafa2p-3")),
    (0.0, 0.5, 0.0),
    (0.30000001192092896, float.fromhex("0x1.261d54p-1"), float.fromhex("0x1.60fp-3")),
    (2.5, float.fromhex("0x1.d9291ep-1"), float.fromhex("0x1.27b9b2p+1")),
    (7.75, float.fromhex("0x1.ffc79p-1"), float.fromhex("0x1.efc954p+2")),
    (14.112419128417969, float.fromhex("0x1.ffffe8p-1"), float.fromhex("0x1.c398dap+3")),
    (25.0, 1.0, 25.0),
]


def _other_python():
    """The python of the TensorFlow line this process is not running, or None."""
    if os.environ.get("EFFICIENTNET_OTHER_PYTHON"):
        return os.environ["EFFICIENTNET_OTHER_PYTHON"]
    path = os.path.join(REPO_ROOT, ".venv" if tf_compat.IS_TF2 else ".venv-tf2", "bin", "python")
    return path if os.path.exists(path) else None


@pytest.mark.skipif(tf_compat.IS_TF2, reason="TF 1.15's CPU kernel; TF 2.x is checked against exact values")
def test_sigmoid_and_swish_have_tf115_values_on_tf115():
    """TF 1.15's bits, which the official numbers were computed with (a rational approximation)."""
    inputs = np.tile(np.array([row[0] for row in TF115_SIGMOID_TABLE], np.float32), 1000)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None])
        gradient_inputs = tf.constant([-3.0, 0.5, 4.0])
        outputs = [tf_compat.sigmoid(x), tf_compat.swish(x),
                   tf.gradients(tf_compat.swish(gradient_inputs), gradient_inputs)[0],
                   tf.gradients(tf_compat.sigmoid(gradient_inputs), gradient_inputs)[0]]
        with tf.Session() as sess:
            sigmoid, swish, swish_grad, sigmoid_grad = sess.run(outputs, {x: inputs})
    sigmoid, swish = sigmoid[:len(TF115_SIGMOID_TABLE)], swish[:len(TF115_SIGMOID_TABLE)]
    np.testing.assert_array_equal(sigmoid, np.array([row[1] for row in TF115_SIGMOID_TABLE], np.float32))
    np.testing.assert_array_equal(swish, np.array([row[2] for row in TF115_SIGMOID_TABLE], np.float32))
    exact = 1.0 / (1.0 + np.exp(-np.array([-3.0, 0.5, 4.0])))
    np.testing.assert_allclose(sigmoid_grad, exact * (1 - exact), rtol=1e-5)
    np.testing.assert_allclose(swish_grad, exact * (1 + np.array([-3.0, 0.5, 4.0]) * (1 - exact)), rtol=1e-5)


@pytest.mark.skipif(not tf_compat.IS_TF2, reason="TF 1.15's kernel is checked bit for bit above")
def test_sigmoid_and_swish_are_exact_on_tf2():
    """TF 2.x's native kernels against float64 values, on [-80, 80] (the sigmoid a normal float32).

    Measured on TF 2.15.1: values within 2.3e-7 relative (TF 1.15's are 660% off near x = -18);
    gradients within 1.2e-6 relative plus 8.5e-8 absolute, the rounding of a float32 sigmoid near 1.
    """
    inputs = np.concatenate([np.linspace(-80.0, 80.0, 160001), [row[0] for row in TF115_SIGMOID_TABLE
                                                                if abs(row[0]) <= 80]]).astype(np.float32)
    with tf.Graph().as_default():
        x = tf.constant(inputs)
        sigmoid, swish = tf_compat.sigmoid(x), tf_compat.swish(x)
        outputs = [sigmoid, swish, tf.gradients(sigmoid, x)[0], tf.gradients(swish, x)[0]]
        with tf.Session() as sess:
            sigmoid, swish, sigmoid_grad, swish_grad = sess.run(outputs)
    x = inputs.astype(np.float64)
    exact = float64_reference.sigmoid(x)
    np.testing.assert_allclose(sigmoid, exact, rtol=1e-6, atol=0)
    np.testing.assert_allclose(swish, x * exact, rtol=1e-6, atol=0)
    np.testing.assert_allclose(sigmoid_grad, exact * (1 - exact), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(swish_grad, exact * (1 + x * (1 - exact)), rtol=2e-6, atol=1e-7)


def test_spatial_mean_matches_reduce_mean():
    values = np.random.RandomState(0).normal(3.0, 20.0, (2, 56, 56, 8)).astype(np.float32)
    with tf.Graph().as_default():
        x = tf.constant(values)
        unknown = tf.placeholder(tf.float32, [None, None, None, 8])
        outputs = [tf_compat.spatial_mean(x, keepdims=True), tf_compat.spatial_mean(x),
                   tf_compat.spatial_mean(unknown)]
        with tf.Session() as sess:
            kept, squeezed, dynamic = sess.run(outputs, {unknown: values})
    exact = values.astype(np.float64).mean(axis=(1, 2))
    assert kept.shape == (2, 1, 1, 8) and squeezed.shape == (2, 8)
    np.testing.assert_allclose(squeezed, exact, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(kept[:, 0, 0], squeezed)
    np.testing.assert_allclose(dynamic, exact, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def exchanged(tmp_path_factory):
    """This version writes a checkpoint, the other reads it and writes its own, this one reads that."""
    other = _other_python()
    if other is None:
        pytest.skip("the other TensorFlow line's python is missing (.venv / .venv-tf2): run scripts/run_tests.sh")
    root = tmp_path_factory.mktemp("tf_versions")
    here, there, read_there = str(root / "here"), str(root / "there"), str(root / "read_there.npz")
    written_here = tf_roundtrip.write_checkpoint(here)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    process = subprocess.run([other, os.path.join(REPO_ROOT, "tests", "tf_roundtrip.py"), "--read=" + here,
                              "--out=" + read_there, "--write=" + there], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=900)
    assert process.returncode == 0, process.stderr[-3000:]
    read_by_other = dict(np.load(read_there))
    written_there = dict(np.load(os.path.join(there, tf_roundtrip.LOGITS_FILE)))
    return {"here": here, "there": there, "written_here": written_here, "read_by_other": read_by_other,
            "written_there": written_there, "read_here": tf_roundtrip.read_logits(there)}


def test_other_version_is_the_other_line(exchanged):
    other_version = str(exchanged["read_by_other"]["version"])
    assert other_version.startswith("2.") != tf_compat.IS_TF2, (tf.__version__, other_version)


def _exact_logits(checkpoint_dir, kind):
    """The float64 logits of a tf_roundtrip checkpoint on the images tf_roundtrip.read_logits uses."""
    reader = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(checkpoint_dir))
    suffix = "/ExponentialMovingAverage" if kind == "ema" else ""
    names = reader.get_variable_to_shape_map()
    tensors = {key: reader.get_tensor(key + suffix) for key in names
               if key.startswith(tf_roundtrip.MODEL + "/") and not key.endswith("/ExponentialMovingAverage")
               and key + suffix in names}
    mean_rgb, stddev_rgb = builder.normalization_constants(tf_roundtrip.MODEL)
    images = (tf_roundtrip._images(1).astype(np.float64) - mean_rgb) / stddev_rgb  # pylint: disable=protected-access
    return float64_reference.efficientnet_b0(images, tensors, prefix=tf_roundtrip.MODEL + "/")[0]


@pytest.mark.parametrize("kind", ["raw", "ema"])
def test_checkpoints_restore_across_versions_with_equal_logits(exchanged, kind):
    """Within the package's 1e-4 bound, though not bit-equal: the versions' sigmoid, mean and batch-norm
    rsqrt kernels round differently (see tf_compat). Measured: raw 1.7e-5 and 4.1e-5, EMA 3.7e-6 and 2.8e-6."""
    errors = (relative_error(exchanged["read_by_other"][kind], exchanged["written_here"][kind]),
              relative_error(exchanged["read_here"][kind], exchanged["written_there"][kind]))
    assert max(errors) <= 1e-4, errors


@pytest.mark.parametrize("kind", ["raw", "ema"])
def test_checkpoints_restore_across_versions_as_exact_as_tf115(exchanged, kind):
    """Each checkpoint (written by either version), read by both versions: TF 2.x's logits are at most
    ERROR_RATIO_BOUND times as far from the float64 answer as TF 1.15's (the official float32 result).
    Measured errors, TF 2.15 / TF 1.15: raw 9.8e-6 / 1.3e-5 and 3.3e-5 / 4.6e-5, EMA 3.7e-6 / 5.8e-6
    and 6.1e-6 / 4.2e-6 (the first pair on the checkpoint TF 2.x wrote, the second on TF 1.15's)."""
    results = {"here": (exchanged["written_here"][kind], exchanged["read_by_other"][kind]),
               "there": (exchanged["read_here"][kind], exchanged["written_there"][kind])}
    for side, (this_version, other_version) in results.items():
        exact = _exact_logits(exchanged[side], kind)
        tf2, tf115 = (this_version, other_version) if tf_compat.IS_TF2 else (other_version, this_version)
        tf2_error, tf115_error = relative_error(tf2, exact), relative_error(tf115, exact)
        print("%s checkpoint, %s: error vs float64: TF 2.x %.2e, TF 1.15 %.2e (ratio %.2f); TF 2.x vs TF 1.15 %.2e"
              % (side, kind, tf2_error, tf115_error, tf2_error / tf115_error, relative_error(tf2, tf115)))
        assert tf2_error <= ERROR_RATIO_BOUND * tf115_error, (side, tf2_error, tf115_error)
        assert tf115_error <= 1e-3, (side, tf115_error)  # measured <= 4.6e-5: the reference is the model


def test_checkpoints_have_the_same_official_keys(exchanged):
    keys = [sorted(name for name, _ in tf.train.list_variables(exchanged[side])) for side in ("here", "there")]
    assert keys[0] == keys[1]
    assert "efficientnet-b0/blocks_3/se/conv2d_1/kernel/ExponentialMovingAverage" in keys[0]
    assert "efficientnet-b0/head/tpu_batch_normalization/moving_variance" in keys[0]

