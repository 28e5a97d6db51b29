"""AutoAugment (policy v0) and RandAugment for EfficientNet training, in core TensorFlow ops.

The official code relies on tf.contrib.image for rotate/shear/translate; tf.contrib is missing on
some Ascend TensorFlow builds, so the projective transform is written here with gather_nd
(nearest-neighbour sampling, the reference's interpolation). Constants, level scaling and the
sampling of ops follow the official reference so that training recipes transfer unchanged.
Every op takes and returns a uint8 [H, W, 3] tensor.
"""

import functools
import math

import tensorflow.compat.v1 as tf

MAX_LEVEL = 10.0
FILL_VALUE = 128
AUTOAUGMENT_HPARAMS = {'cutout_const': 100, 'translate_const': 250}
RANDAUGMENT_HPARAMS = {'cutout_const': 40, 'translate_const': 100}

# Policy v0 from the AutoAugment paper, as used by the official EfficientNet training:
# each sub-policy is a list of (op name, probability, level 0..10).
POLICY_V0 = (
    (('Equalize', 0.8, 1), ('ShearY', 0.8, 4)),
    (('Color', 0.4, 9), ('Equalize', 0.6, 3)),
    (('Color', 0.4, 1), ('Rotate', 0.6, 8)),
    (('Solarize', 0.8, 3), ('Equalize', 0.4, 7)),
    (('Solarize', 0.4, 2), ('Solarize', 0.6, 2)),
    (('Color', 0.2, 0), ('Equalize', 0.8, 8)),
    (('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)),
    (('ShearX', 0.2, 9), ('Rotate', 0.6, 8)),
    (('Color', 0.6, 1), ('Equalize', 1.0, 2)),
    (('Invert', 0.4, 9), ('Rotate', 0.6, 0)),
    (('Equalize', 1.0, 9), ('ShearY', 0.6, 3)),
    (('Color', 0.4, 7), ('Equalize', 0.6, 0)),
    (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)),
    (('Solarize', 0.6, 8), ('Color', 0.6, 9)),
    (('Solarize', 0.2, 4), ('Rotate', 0.8, 9)),
    (('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)),
    (('ShearX', 0.0, 0), ('Solarize', 0.8, 4)),
    (('ShearY', 0.8, 0), ('Color', 0.6, 4)),
    (('Color', 1.0, 0), ('Rotate', 0.6, 2)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 8)),
    (('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)),
    (('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)),
    (('Posterize', 0.8, 2), ('Solarize', 0.6, 10)),
    (('Solarize', 0.6, 8), ('Equalize', 0.6, 1)),
    (('Color', 0.8, 6), ('Rotate', 0.4, 5)),
)

RANDAUGMENT_OPS = (
    'AutoContrast',
    'Equalize',
    'Invert',
    'Rotate',
    'Posterize',
    'Solarize',
    'Color',
    'Contrast',
    'Brightness',
    'Sharpness',
    'ShearX',
    'ShearY',
    'TranslateX',
    'TranslateY',
    'Cutout',
    'SolarizeAdd',
)


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)


def blend(image1, image2, factor):
    """image1 + factor * (image2 - image1), clipped: PIL ImageEnhance's inter/extrapolation."""
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    return _to_uint8(image1 + factor * (image2 - image1))


def _round_half_away_from_zero(x):
    """std::round, which the reference transform kernel uses to pick the nearest pixel."""
    return tf.sign(x) * tf.floor(tf.abs(x) + 0.5)


def projective_transform(image, transform, fill=FILL_VALUE):
    """Nearest-neighbour projective warp; pixels mapped from outside the image get `fill`.

    transform = [a0, a1, a2, b0, b1, b2, c0, c1] maps each output pixel (x, y) to the input
    point ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k) with k = c0 x + c1 y + 1, the
    convention of tf.contrib.image.transform.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    a0, a1, a2, b0, b1, b2, c0, c1 = tf.unstack(tf.cast(transform, tf.float32), num=8)
    out_y, out_x = tf.meshgrid(
        tf.cast(tf.range(height), tf.float32), tf.cast(tf.range(width), tf.float32), indexing='ij'
    )
    k = c0 * out_x + c1 * out_y + 1.0
    in_x = tf.cast(_round_half_away_from_zero((a0 * out_x + a1 * out_y + a2) / k), tf.int32)
    in_y = tf.cast(_round_half_away_from_zero((b0 * out_x + b1 * out_y + b2) / k), tf.int32)
    inside = (in_x >= 0) & (in_x < width) & (in_y >= 0) & (in_y < height) & tf.not_equal(k, 0.0)
    indices = tf.stack([tf.clip_by_value(in_y, 0, height - 1), tf.clip_by_value(in_x, 0, width - 1)], axis=-1)
    warped = tf.gather_nd(image, indices)
    inside = tf.broadcast_to(inside[:, :, tf.newaxis], tf.shape(warped))
    return tf.where(inside, warped, tf.fill(tf.shape(warped), tf.cast(fill, image.dtype)))


def rotate(image, degrees, fill=FILL_VALUE):
    """Rotates counterclockwise about the image centre by `degrees`."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return projective_transform(image, tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0]), fill)


def translate_x(image, pixels, fill=FILL_VALUE):
    pixels = tf.cast(pixels, tf.float32)
    return projective_transform(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0]), fill)


def translate_y(image, pixels, fill=FILL_VALUE):
    pixels = tf.cast(pixels, tf.float32)
    return projective_transform(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0]), fill)


def shear_x(image, level, fill=FILL_VALUE):
    level = tf.cast(level, tf.float32)
    return projective_transform(image, tf.stack([1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]), fill)


def shear_y(image, level, fill=FILL_VALUE):
    level = tf.cast(level, tf.float32)
    return projective_transform(image, tf.stack([1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0]), fill)


def cutout(image, pad_size, fill=FILL_VALUE):
    """Fills a (2*pad_size)^2 square at a uniformly random centre (clipped at the borders)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    center_y = tf.random_uniform([], 0, height, dtype=tf.int32)
    center_x = tf.random_uniform([], 0, width, dtype=tf.int32)
    rows = tf.range(height)
    cols = tf.range(width)
    in_rows = (rows >= center_y - pad_size) & (rows < center_y + pad_size)
    in_cols = (cols >= center_x - pad_size) & (cols < center_x + pad_size)
    mask = in_rows[:, tf.newaxis] & in_cols[tf.newaxis, :]
    mask = tf.broadcast_to(mask[:, :, tf.newaxis], tf.shape(image))
    return tf.where(mask, tf.fill(tf.shape(image), tf.cast(fill, image.dtype)), image)


def solarize(image, threshold=128):
    """Inverts pixels >= threshold. Like the reference, the threshold is a uint8 (256 wraps to 0)."""
    threshold = tf.constant(threshold % 256, tf.uint8)
    return tf.where(image < threshold, image, 255 - image)


def solarize_add(image, addition=0, threshold=128):
    """Adds `addition` (clipped) to pixels below threshold."""
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int64) + addition, 0, 255), tf.uint8)
    return tf.where(image < tf.constant(threshold % 256, tf.uint8), added, image)


def color(image, factor):
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(gray, image, factor)


def contrast(image, factor):
    """Blends towards a constant grey image.

    The grey level is the reference's: the sum of the 256-bin histogram divided by 256, i.e. the
    pixel count / 256 (clipped to 255), not the mean intensity. Kept for parity with the official
    training recipe.
    """
    gray = tf.cast(tf.image.rgb_to_grayscale(image), tf.int32)
    hist = tf.histogram_fixed_width(gray, [0, 255], nbins=256)
    level = tf.reduce_sum(tf.cast(hist, tf.float32)) / 256.0
    degenerate = _to_uint8(tf.ones_like(gray, dtype=tf.float32) * level)
    return blend(tf.image.grayscale_to_rgb(degenerate), image, factor)


def brightness(image, factor):
    return blend(tf.zeros_like(image), image, factor)


def posterize(image, bits):
    """Keeps the `bits` high bits of each channel (TF clamps out-of-range shifts)."""
    shift = 8 - bits
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def invert(image):
    return 255 - image


def autocontrast(image):
    """Stretches each channel linearly to 0..255; flat channels are left as they are."""

    def stretch(channel):
        low = tf.cast(tf.reduce_min(channel), tf.float32)
        high = tf.cast(tf.reduce_max(channel), tf.float32)
        scale = 255.0 / tf.maximum(high - low, 1e-6)
        stretched = _to_uint8(tf.cast(channel, tf.float32) * scale - low * scale)
        return tf.cond(high > low, lambda: stretched, lambda: channel)

    return tf.stack([stretch(image[:, :, c]) for c in range(3)], axis=2)


def sharpness(image, factor):
    """Blends with PIL's SMOOTH-filtered image; the 1-pixel border stays unfiltered as in PIL."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(
        tf.cast(image, tf.float32)[tf.newaxis], kernel, strides=[1, 1, 1, 1], padding='VALID'
    )
    smooth = _to_uint8(smooth[0])
    interior = tf.pad(tf.ones_like(smooth, dtype=tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(interior, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(degenerate, image, factor)


def equalize(image):
    """PIL ImageOps.equalize per channel: histogram-equalising lookup table."""

    def equalize_channel(channel):
        values = tf.cast(channel, tf.int32)
        hist = tf.histogram_fixed_width(values, [0, 255], nbins=256)
        nonzero = tf.boolean_mask(hist, hist > 0)
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

        def apply_lut():
            lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
            lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
            return tf.cast(tf.gather(lut, values), tf.uint8)

        return tf.cond(tf.equal(step, 0), lambda: channel, apply_lut)

    return tf.stack([equalize_channel(image[:, :, c]) for c in range(3)], axis=2)


def _random_sign(value):
    """value or -value with equal probability (rotate/shear/translate go either way)."""
    keep = tf.cast(tf.floor(tf.random_uniform([]) + 0.5), tf.bool)
    value = tf.convert_to_tensor(value, tf.float32)
    return tf.cond(keep, lambda: value, lambda: -value)


def _enhance_factor(level):
    return (level / MAX_LEVEL) * 1.8 + 0.1


def make_op(name, level, hparams):
    """Returns image -> augmented image for op `name` at `level` (0..10, may exceed 10)."""
    translate_pixels = level / MAX_LEVEL * float(hparams['translate_const'])
    ops = {
        'AutoContrast': autocontrast,
        'Equalize': equalize,
        'Invert': invert,
        'Rotate': lambda im: rotate(im, _random_sign(level / MAX_LEVEL * 30.0)),
        'Posterize': lambda im: posterize(im, int(level / MAX_LEVEL * 4)),
        'Solarize': lambda im: solarize(im, int(level / MAX_LEVEL * 256)),
        'SolarizeAdd': lambda im: solarize_add(im, int(level / MAX_LEVEL * 110)),
        'Color': lambda im: color(im, _enhance_factor(level)),
        'Contrast': lambda im: contrast(im, _enhance_factor(level)),
        'Brightness': lambda im: brightness(im, _enhance_factor(level)),
        'Sharpness': lambda im: sharpness(im, _enhance_factor(level)),
        'ShearX': lambda im: shear_x(im, _random_sign(level / MAX_LEVEL * 0.3)),
        'ShearY': lambda im: shear_y(im, _random_sign(level / MAX_LEVEL * 0.3)),
        'TranslateX': lambda im: translate_x(im, _random_sign(translate_pixels)),
        'TranslateY': lambda im: translate_y(im, _random_sign(translate_pixels)),
        'Cutout': lambda im: cutout(im, int(level / MAX_LEVEL * hparams['cutout_const'])),
    }
    if name not in ops:
        raise ValueError('unknown augmentation op %r; known: %s' % (name, ', '.join(sorted(ops))))
    return ops[name]


def _apply_with_probability(op, image, probability):
    apply = tf.cast(tf.floor(tf.random_uniform([]) + probability), tf.bool)
    return tf.cond(apply, lambda: op(image), lambda: image)


def _apply_one_of(branches, image):
    """Runs one uniformly chosen branch (a functional Case: only that branch executes)."""
    choice = tf.random_uniform([], maxval=len(branches), dtype=tf.int32)
    return tf.switch_case(choice, [functools.partial(branch, image) for branch in branches])


def distort_image_with_autoaugment(image, policy_name='v0'):
    """Applies one randomly chosen sub-policy of AutoAugment policy v0 to a uint8 image."""
    if policy_name != 'v0':
        raise ValueError('unknown AutoAugment policy %r; only v0 is supported' % policy_name)

    def sub_policy(steps):
        def run(im):
            for name, probability, level in steps:
                im = _apply_with_probability(make_op(name, float(level), AUTOAUGMENT_HPARAMS), im, probability)
            return im

        return run

    return _apply_one_of([sub_policy(steps) for steps in POLICY_V0], image)


def distort_image_with_randaugment(image, num_layers, magnitude):
    """RandAugment: `num_layers` times, one uniformly chosen op at `magnitude`, always applied."""
    ops = [make_op(name, float(magnitude), RANDAUGMENT_HPARAMS) for name in RANDAUGMENT_OPS]
    for _ in range(num_layers):
        image = _apply_one_of(ops, image)
    return image
