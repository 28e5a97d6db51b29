"""TFRecord input pipeline and image preprocessing matching the official EfficientNet code.

Records hold `image/encoded` (JPEG, or PNG and other formats tf.image.decode_image reads) and
`image/class/label` (int64). Outputs are float32 images in 0..255 (not normalized: the model
side does that) and int32 labels starting at 0.
"""

import glob
import json
import os

import tensorflow.compat.v1 as tf

from effnet import tf_compat  # noqa: F401  (graph mode on TensorFlow 2.x)
from effnet.data import autoaugment

CENTER_CROP_FRACTION = 0.875
DATASET_INFO_FILE = 'dataset_info.json'
LABELS_FILE = 'labels.txt'
IMAGENET_NUM_CLASSES = 1000
IMAGENET_LABEL_OFFSET = 1
SPLITS = ('train', 'validation')
SPLIT_FOLDERS = {'train': 'train_tf', 'validation': 'valid_tf'}
AUGMENT_NAMES = (None, 'autoaugment', 'randaugment')
SHUFFLE_BUFFER = 1024
MAX_INTERLEAVE_FILES = 16
READ_BUFFER_BYTES = 8 * 1024 * 1024
PADDING_LABEL = -1
MIN_CROP_AREA = 0.08
# The centre crop keeps 87.5% of the shorter side, rounded down: a 1-pixel side leaves an empty crop.
MIN_IMAGE_SIDE = 2

_FIX_HINT = 'point TMP_DATA_PATH at a folder made by make_tfrecords.py or the ImageNet TFRecords'
# Names of the input pipeline's ops whose failures effnet/data/pipeline_errors.py explains; it tells them apart by the
# failing node's name (in the message as {{node NAME}}: errors inside tf.data functions carry no err.op).
PARSE_OP = 'record_parse'
LABEL_CHECK_OP = 'record_label_check'
SIZE_CHECK_OP = 'record_size_check'
DECODE_OP = 'record_decode'
LABEL_CHECK_MESSAGE = 'label_check: record'
SIZE_CHECK_MESSAGE = 'size_check: record'


class DatasetError(ValueError):
    """Any problem with the data on disk; the message says what to fix."""


def find_record_files(data_path, split):
    """Sorted record files of `split`: <data_path>/<split>-* shards, else train_tf/* or valid_tf/*."""
    if split not in SPLITS:
        raise ValueError('split must be one of %s, got %r' % (SPLITS, split))
    if not data_path or not os.path.exists(data_path):
        raise DatasetError('data path %r does not exist; %s' % (data_path, _FIX_HINT))
    if not os.path.isdir(data_path):
        raise DatasetError('data path %s is not a folder; %s' % (data_path, _FIX_HINT))
    if not os.listdir(data_path):
        raise DatasetError('data path %s is empty; %s' % (data_path, _FIX_HINT))
    shard_pattern = os.path.join(data_path, split + '-*')
    folder_pattern = os.path.join(data_path, SPLIT_FOLDERS[split], '*')
    for pattern in (shard_pattern, folder_pattern):
        files = sorted(path for path in glob.glob(pattern) if os.path.isfile(path))
        if files:
            return files
    raise DatasetError(
        'no %s records in %s: looked for %s and %s; %s' % (split, data_path, shard_pattern, folder_pattern, _FIX_HINT)
    )


def read_dataset_info(data_path):
    """The converter's dataset_info.json, or ImageNet defaults (1000 classes, labels 1..1000)."""
    path = os.path.join(data_path, DATASET_INFO_FILE)
    if not os.path.isfile(path):
        return {
            'num_classes': IMAGENET_NUM_CLASSES,
            'label_offset': IMAGENET_LABEL_OFFSET,
            'num_examples': {'train': None, 'validation': None},
            'labels_file': None,
        }
    try:
        with open(path) as f:
            info = json.load(f)
        num_examples = info.get('num_examples') or {}
        labels_file = info.get('labels_file')
        return {
            'num_classes': None if info.get('num_classes') is None else int(info['num_classes']),
            'label_offset': int(info.get('label_offset', IMAGENET_LABEL_OFFSET)),
            'num_examples': {
                split: (None if num_examples.get(split) is None else int(num_examples[split])) for split in SPLITS
            },
            'labels_file': os.path.join(data_path, labels_file) if labels_file else None,
        }
    except (ValueError, TypeError, AttributeError) as e:
        raise DatasetError('%s is not valid dataset info (%s); re-create it with make_tfrecords.py' % (path, e))


MISSING_INFO_FIX = ('point TMP_DATA_PATH at the folder make_tfrecords.py wrote (it holds %s), or add a %s with '
                    '"num_classes" and "label_offset" there' % (DATASET_INFO_FILE, DATASET_INFO_FILE))


def missing_info_text(data_path):
    """A phrase saying that data_path has no dataset_info.json and what is assumed instead, or None when it
    has one: the 1000 classes then come from that assumption, not from the data."""
    if os.path.isfile(os.path.join(data_path, DATASET_INFO_FILE)):
        return None
    return ('TMP_DATA_PATH %s has no %s, so its records are read as ImageNet\'s (%d classes, labels 1..%d)'
            % (data_path, DATASET_INFO_FILE, IMAGENET_NUM_CLASSES, IMAGENET_NUM_CLASSES))


def load_labels(path):
    """Class names, one per non-empty line, in label order."""
    if not path or not os.path.isfile(path):
        raise DatasetError('labels file %r not found; pass a labels.txt with one class name per line' % (path,))
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def count_records(files):
    """Number of records in `files`, reading every record so damaged files fail here, not mid-run."""
    total = 0
    for path in files:
        try:
            for _ in tf.python_io.tf_record_iterator(path):
                total += 1
        except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
            raise DatasetError(
                'record file %s is truncated or corrupt (%s); re-create it with '
                'make_tfrecords.py' % (path, e.message.splitlines()[0])
            )
        except tf.errors.NotFoundError:
            raise DatasetError('record file %s not found; %s' % (path, _FIX_HINT))
    return total


def crop_padding(image_size):
    """Padding of the eval centre crop, image_size / (image_size + padding) of the short side.

    The official code's current rule, round(S * (1/0.875 - 1)): 32 at 224 like its older constant,
    and proportional elsewhere, so small images (32x32 sets) keep 87.5% of their side, not half.
    """
    return int(round(image_size * (1.0 / CENTER_CROP_FRACTION - 1.0)))


def _center_crop_window(image_shape, image_size):
    """Official eval crop: a centred square of image_size/(image_size+padding) of the short side."""
    height, width = image_shape[0], image_shape[1]
    fraction = image_size / float(image_size + crop_padding(image_size))
    crop = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    return tf.stack([((height - crop) + 1) // 2, ((width - crop) + 1) // 2, crop, crop])


def _train_crop_window(image_shape, crop_begin, crop_size, image_size):
    """The sampled crop as [y, x, h, w]; the eval centre crop when sampling returned the whole image.

    Like the official code, 'whole image' means all 3 entries of the encoded image's shape equal
    the decoded RGB crop's shape [h, w, 3].
    """
    crop_shape = tf.stack([crop_size[0], crop_size[1], 3])
    sampling_failed = tf.reduce_all(tf.equal(tf.cast(image_shape, tf.int32), crop_shape))
    sampled = tf.stack([crop_begin[0], crop_begin[1], crop_size[0], crop_size[1]])
    return tf.cond(sampling_failed, lambda: _center_crop_window(image_shape, image_size), lambda: sampled)


def _random_crop_window(image_shape, image_size, min_crop_area):
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        min_object_covered=0.1,
        aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
        area_range=(min_crop_area, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return _train_crop_window(image_shape, begin, size, image_size)


def _checked_size(shape, record):
    """shape, after checking (for a record: its (file, index)) that the image is not too small to crop."""
    if record is None:
        return shape
    check = tf.debugging.Assert(tf.reduce_min(shape[:2]) >= MIN_IMAGE_SIDE,
                                [SIZE_CHECK_MESSAGE, record[1], 'of', record[0], 'is', shape[0], 'x', shape[1]],
                                name=SIZE_CHECK_OP)
    with tf.control_dependencies([check]):
        return tf.identity(shape)


def decode_crop_resize(image_bytes, image_size, window_fn, record=None):
    """Decodes only the crop window(shape) of a JPEG (fused op), or the whole image otherwise. With `record`
    ((file, index) of the TFRecord), an image too small to crop stops the pipeline with an error naming it."""

    def jpeg():
        with tf.name_scope(DECODE_OP):
            shape = tf.image.extract_jpeg_shape(image_bytes)
        window = window_fn(_checked_size(shape, record))
        with tf.name_scope(DECODE_OP):
            return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other_format():
        with tf.name_scope(DECODE_OP):
            image = tf.image.decode_image(image_bytes, channels=3, expand_animations=False)
        window = window_fn(_checked_size(tf.shape(image), record))
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    image = tf.cond(tf.image.is_jpeg(image_bytes), jpeg, other_format)
    image = tf.image.resize_bicubic([image], [image_size, image_size])[0]
    return tf.reshape(image, [image_size, image_size, 3])


def _augment(image, augment_name, randaug_num_layers, randaug_magnitude):
    image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
    if augment_name == 'autoaugment':
        image = autoaugment.distort_image_with_autoaugment(image, 'v0')
    else:
        image = autoaugment.distort_image_with_randaugment(image, randaug_num_layers, randaug_magnitude)
    return tf.cast(image, tf.float32)


def _check_augment_name(augment_name):
    if augment_name not in AUGMENT_NAMES:
        raise ValueError('augment_name must be one of %s, got %r' % (AUGMENT_NAMES, augment_name))


def preprocess_for_train(image_bytes, image_size, augment_name=None, randaug_num_layers=2, randaug_magnitude=10,
                         min_crop_area=MIN_CROP_AREA, random_flip=True, record=None):
    """Random-area crop, bicubic resize, random flip, optional AutoAugment/RandAugment.

    The defaults are the official ImageNet ones. Small or orientation-sensitive images (digits,
    32x32 sets) train better with a larger min_crop_area and random_flip=False. `record` ((file,
    index)) names the record when the image is too small to crop.
    """
    _check_augment_name(augment_name)
    if not 0.0 < min_crop_area <= 1.0:
        raise ValueError('min_crop_area must be in (0, 1], got %r' % (min_crop_area,))
    image = decode_crop_resize(
        image_bytes, image_size, lambda shape: _random_crop_window(shape, image_size, min_crop_area), record)
    if random_flip:
        image = tf.image.random_flip_left_right(image)
    if augment_name:
        image = _augment(image, augment_name, randaug_num_layers, randaug_magnitude)
    return tf.reshape(image, [image_size, image_size, 3])


def preprocess_for_eval(image_bytes, image_size, record=None):
    """Centre crop of image_size/(image_size+crop_padding(image_size)) of the short side, bicubic resize;
    `record` as for preprocess_for_train."""
    return decode_crop_resize(image_bytes, image_size, lambda shape: _center_crop_window(shape, image_size),
                               record)


def decode_and_preprocess_file(path, image_size):
    """Eval preprocessing of one image file (JPEG, PNG, GIF or BMP)."""
    if isinstance(path, str) and not os.path.isfile(path):
        raise DatasetError('image file %s not found; pass the path of a JPEG or PNG file' % path)
    return preprocess_for_eval(tf.io.read_file(path), image_size)


def _parse_record(filename, index, record, label_offset, num_classes):
    """(image bytes, label - label_offset); with num_classes, a label outside [0, num_classes) stops the
    pipeline with an error naming the record (see effnet/data/pipeline_errors.py)."""
    features = tf.parse_single_example(
        record,
        {
            'image/encoded': tf.FixedLenFeature([], tf.string),
            'image/class/label': tf.FixedLenFeature([], tf.int64),
        },
        name=PARSE_OP,
    )
    stored = features['image/class/label']
    label = tf.cast(stored, tf.int32) - label_offset
    if num_classes:
        in_range = tf.logical_and(label >= 0, label < num_classes)
        # Assert guards itself with a cond for these data types: the message costs nothing while labels fit.
        check = tf.debugging.Assert(in_range, [LABEL_CHECK_MESSAGE, index, 'of', filename, 'stores label', stored],
                                    name=LABEL_CHECK_OP)
        with tf.control_dependencies([check]):
            label = tf.identity(label)
    return features['image/encoded'], label


def _records_of(filename):
    """(filename, index in the file, record) of one record file, so errors can name the record."""
    records = tf.data.TFRecordDataset(filename, buffer_size=READ_BUFFER_BYTES)
    return records.enumerate().map(
        lambda index, record: (filename, index, record))


def eval_images(data_path, split, image_size, limit, num_classes=None):
    """Up to `limit` images of `split` through the evaluation preprocessing (centre crop, bicubic resize), taken
    in turn from each record file: (images [n,S,S,3] float32 RGB 0..255, labels [n] int32). The export tools
    calibrate and check exported models on these, so they see exactly what test.py feeds the model."""
    from effnet.data import pipeline_errors  # here, not at the top: pipeline_errors reads this module

    files = find_record_files(data_path, split)
    label_offset = read_dataset_info(data_path)['label_offset']
    with tf.Graph().as_default():
        dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
            _records_of, cycle_length=len(files), block_length=1)
        dataset = dataset.take(limit).map(lambda filename, index, record: _parse_record(
            filename, index, record, label_offset, num_classes))
        dataset = dataset.map(lambda image_bytes, label: (preprocess_for_eval(image_bytes, image_size), label))
        images, labels = tf.data.make_one_shot_iterator(dataset.batch(max(1, limit))).get_next()
        with tf.Session() as sess, pipeline_errors.explained(data_path, split, label_offset, num_classes):
            try:
                return sess.run([images, labels])
            except tf.errors.OutOfRangeError:
                raise DatasetError('the %s records in %s hold no images' % (split, data_path))


def _pad_batch(images, labels, batch_size):
    """Pads a short final batch to batch_size with zero images labelled -1 (static shapes)."""
    missing = batch_size - tf.shape(labels)[0]
    images = tf.pad(images, [[0, missing], [0, 0], [0, 0], [0, 0]])
    labels = tf.pad(labels, [[0, missing]], constant_values=PADDING_LABEL)
    return images, labels


def _read_records(files, num_workers, worker_index, is_training, seed):
    """Records of this worker's share: whole files when there are enough, else every n-th record."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if num_workers > 1 and len(files) < num_workers:
        tf.logging.info(
            '%d record files for %d workers: sharding by record instead of by file '
            '(same result, all files are read by every worker)',
            len(files),
            num_workers,
        )
        dataset = dataset.flat_map(_records_of)
        return dataset.shard(num_workers, worker_index)
    if num_workers > 1:
        dataset = dataset.shard(num_workers, worker_index)
    if not is_training:
        return dataset.flat_map(_records_of)
    num_files = -(-len(files) // num_workers) if num_workers > 1 else len(files)
    dataset = dataset.shuffle(num_files, seed=seed)
    # Not Dataset.interleave(num_parallel_calls=...): in TensorFlow 1.15 closing the session after an input
    # error (a label or image check) then crashes the process (SIGSEGV) before the error is reported.
    return dataset.apply(tf.data.experimental.parallel_interleave(
        _records_of, cycle_length=min(num_files, MAX_INTERLEAVE_FILES), block_length=1, sloppy=True))


def build_dataset(
    data_path,
    is_training,
    image_size,
    batch_size,
    num_workers=1,
    worker_index=0,
    augment_name=None,
    randaug_num_layers=2,
    randaug_magnitude=10,
    seed=None,
    label_offset=None,
    min_crop_area=MIN_CROP_AREA,
    random_flip=True,
    num_classes=None,
):
    """(images [B,S,S,3] float32, labels [B] int32) batches of the train or validation split.

    Training repeats forever, shuffled, dropping the remainder. Evaluation makes one ordered pass
    and pads the last batch with label -1 entries, so callers count only labels >= 0. With
    num_classes every label is checked to lie in [0, num_classes): a record outside stops the
    pipeline (effnet/data/pipeline_errors.py names it), so no real image is ever taken for padding.
    """
    _check_augment_name(augment_name)
    if image_size <= 0 or batch_size <= 0:
        raise ValueError('image_size and batch_size must be positive, got %r and %r' % (image_size, batch_size))
    if num_workers < 1 or not 0 <= worker_index < num_workers:
        raise ValueError(
            'need num_workers >= 1 and 0 <= worker_index < num_workers, got %r and %r' % (num_workers, worker_index)
        )
    files = find_record_files(data_path, 'train' if is_training else 'validation')
    if label_offset is None:
        label_offset = read_dataset_info(data_path)['label_offset']
    autotune = tf.data.experimental.AUTOTUNE
    dataset = _read_records(files, num_workers, worker_index, is_training, seed)

    # Plain graph code: skipping AutoGraph avoids its conversion warnings and start-up time.
    if is_training:

        @tf.autograph.experimental.do_not_convert
        def parse(filename, index, record):
            image_bytes, label = _parse_record(filename, index, record, label_offset, num_classes)
            return (
                preprocess_for_train(
                    image_bytes,
                    image_size,
                    augment_name,
                    randaug_num_layers,
                    randaug_magnitude,
                    min_crop_area=min_crop_area,
                    random_flip=random_flip,
                    record=(filename, index),
                ),
                label,
            )

        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed).repeat()
        dataset = dataset.map(parse, num_parallel_calls=autotune)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        options = tf.data.Options()
        options.experimental_deterministic = False
        dataset = dataset.with_options(options)
    else:

        @tf.autograph.experimental.do_not_convert
        def parse(filename, index, record):
            image_bytes, label = _parse_record(filename, index, record, label_offset, num_classes)
            return preprocess_for_eval(image_bytes, image_size, record=(filename, index)), label

        dataset = dataset.map(parse, num_parallel_calls=autotune)
        dataset = dataset.batch(batch_size)
        dataset = dataset.map(lambda images, labels: _pad_batch(images, labels, batch_size))

    def set_shapes(images, labels):
        images.set_shape([batch_size, image_size, image_size, 3])
        labels.set_shape([batch_size])
        return images, labels

    return dataset.map(set_shapes).prefetch(autotune)
