"""effnet/data/autoaugment.py: every op keeps shape/dtype and changes the image; geometry and PIL parity."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image, ImageOps

from effnet.data import autoaugment


@pytest.fixture(autouse=True)
def fresh_graph():
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        yield


def run(tensors):
    with tf.Session() as session:
        return session.run(tensors)


def test_policy_v0_and_randaugment_op_list_are_the_reference_ones():
    assert len(autoaugment.POLICY_V0) == 25
    assert all(len(sub_policy) == 2 for sub_policy in autoaugment.POLICY_V0)
    assert len(autoaugment.RANDAUGMENT_OPS) == 16
    assert autoaugment.AUTOAUGMENT_HPARAMS == {'cutout_const': 100, 'translate_const': 250}
    assert autoaugment.RANDAUGMENT_HPARAMS == {'cutout_const': 40, 'translate_const': 100}


def test_every_op_keeps_shape_and_dtype_and_changes_the_image():
    # Values 20..200: no channel spans 0..255, so AutoContrast and Equalize have work to do.
    image = np.random.RandomState(0).randint(20, 200, (48, 40, 3)).astype(np.uint8)
    outputs = {
        name: autoaugment.make_op(name, 10.0, autoaugment.RANDAUGMENT_HPARAMS)(tf.constant(image))
        for name in autoaugment.RANDAUGMENT_OPS
    }
    results = run(outputs)
    for name, result in results.items():
        assert result.shape == image.shape and result.dtype == np.uint8, name
        assert not np.array_equal(result, image), name


def test_unknown_op_is_rejected():
    with pytest.raises(ValueError, match='unknown augmentation op'):
        autoaugment.make_op('Mosaic', 5.0, autoaugment.RANDAUGMENT_HPARAMS)


def test_rotate_90_degrees_is_a_counterclockwise_quarter_turn():
    image = np.random.RandomState(1).randint(0, 256, (9, 9, 3)).astype(np.uint8)
    np.testing.assert_array_equal(run(autoaugment.rotate(tf.constant(image), 90.0)), np.rot90(image))


def test_translate_and_shear_move_content_and_fill_with_128():
    image = np.random.RandomState(2).randint(0, 256, (10, 12, 3)).astype(np.uint8)
    moved, sheared = run(
        [autoaugment.translate_x(tf.constant(image), 3.0), autoaugment.shear_y(tf.constant(image), 0.5)]
    )
    np.testing.assert_array_equal(moved[:, :-3], image[:, 3:])
    assert np.all(moved[:, -3:] == 128)
    for x in range(12):  # output (x, y) samples input (x, y + 0.5 x)
        shift = int(np.floor(0.5 * x + 0.5))
        np.testing.assert_array_equal(sheared[: 10 - shift, x], image[shift:, x])
        assert np.all(sheared[10 - shift :, x] == 128)


@pytest.mark.parametrize(
    'op,pil_op,tolerance',
    [
        (autoaugment.equalize, ImageOps.equalize, 0),
        # float32 (reference) vs float64 (PIL) arithmetic before truncation: off by one at most.
        (autoaugment.autocontrast, ImageOps.autocontrast, 1),
        (autoaugment.invert, ImageOps.invert, 0),
        (lambda im: autoaugment.posterize(im, 3), lambda im: ImageOps.posterize(im, 3), 0),
        (lambda im: autoaugment.solarize(im, 100), lambda im: ImageOps.solarize(im, 100), 0),
    ],
)
def test_pixel_ops_match_pil(op, pil_op, tolerance):
    image = np.random.RandomState(3).randint(10, 230, (30, 20, 3)).astype(np.uint8)
    expected = np.asarray(pil_op(Image.fromarray(image))).astype(np.int32)
    got = run(op(tf.constant(image))).astype(np.int32)
    assert np.abs(got - expected).max() <= tolerance


def test_solarize_threshold_wraps_like_the_reference():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    # level 10 gives threshold 256, which the reference compares as uint8 0: everything inverts.
    np.testing.assert_array_equal(run(autoaugment.solarize(tf.constant(image), 256)), 255 - image)


def test_blend_interpolates_and_clips_extrapolation():
    dark = tf.constant(np.full((2, 2, 3), 100, np.uint8))
    light = tf.constant(np.full((2, 2, 3), 200, np.uint8))
    half, far = run([autoaugment.blend(dark, light, 0.5), autoaugment.blend(dark, light, 1.9)])
    assert np.all(half == 150) and np.all(far == 255)


def test_cutout_fills_one_square_with_128():
    image = np.zeros((64, 64, 3), np.uint8)
    results = run([autoaugment.cutout(tf.constant(image), 5) for _ in range(8)])
    for result in results:
        rows, cols = np.nonzero(result[:, :, 0] == 128)
        assert 0 < rows.size <= 100 and np.all(result[:, :, 0] == result[:, :, 2])
        assert rows.max() - rows.min() < 10 and cols.max() - cols.min() < 10


@pytest.mark.parametrize(
    'distort',
    [
        lambda im: autoaugment.distort_image_with_autoaugment(im, 'v0'),
        lambda im: autoaugment.distort_image_with_randaugment(im, 2, 10),
    ],
)
def test_policies_change_images_and_keep_shape(distort):
    image = np.random.RandomState(4).randint(20, 200, (24, 24, 3)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensors(image).repeat(16).map(distort).batch(16)
    results = run(tf.data.make_one_shot_iterator(dataset).get_next())
    assert results.shape == (16, 24, 24, 3) and results.dtype == np.uint8
    changed = sum(not np.array_equal(result, image) for result in results)
    assert changed >= 8


def test_unknown_autoaugment_policy_is_rejected():
    with pytest.raises(ValueError, match='v0'):
        autoaugment.distort_image_with_autoaugment(tf.zeros([4, 4, 3], tf.uint8), 'v3')
