"""Input-pipeline failures explained as one DatasetError naming the record and the fix. The explanation is
chosen by the failing op (preprocess.py names its parse, label-check, size-check and decode ops), never by
the wording of a message alone."""
import contextlib
import os
import re
import time

import tensorflow.compat.v1 as tf

from preprocess import (
    DATASET_INFO_FILE,
    DECODE_OP,
    LABEL_CHECK_MESSAGE,
    LABEL_CHECK_OP,
    MIN_IMAGE_SIDE,
    PARSE_OP,
    SIZE_CHECK_MESSAGE,
    SIZE_CHECK_OP,
    DatasetError,
    decode_crop_resize,
    find_record_files,
)

_FAILING_NODE = re.compile(r'\{\{node ([^}]+)\}\}')
_LABEL_CHECK_TEXT = re.compile(re.escape(LABEL_CHECK_MESSAGE)
                               + r'\] \[(\d+)\] \[of\] \[(.*?)\] \[stores label\] \[(-?\d+)\]')
_SIZE_CHECK_TEXT = re.compile(re.escape(SIZE_CHECK_MESSAGE)
                              + r'\] \[(\d+)\] \[of\] \[(.*?)\] \[is\] \[(\d+)\] \[x\] \[(\d+)\]')
_FEATURE_MISSING = re.compile(r'Feature: (\S+) \(data type: \w+\) is required but could not be found')
SCAN_SECONDS = 120


@contextlib.contextmanager
def explained(data_path, split, label_offset, num_classes):
    """Re-raises an input-pipeline failure inside the block as explain()'s DatasetError (other
    errors pass unchanged). Wrap only what pulls from the pipeline: the explanation is chosen by the failing
    op, but a scan for an undecodable record should never follow a model error."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        reason = explain(error, data_path, split, label_offset, num_classes)
        if reason is None:
            raise
        raise reason


def failing_op(error):
    """Which of the input pipeline's named ops (PARSE_OP, LABEL_CHECK_OP, SIZE_CHECK_OP, DECODE_OP) failed,
    from err.op when the session names it, else from the {{node NAME}} of an error inside a tf.data
    function; None for any other op."""
    names = [error.op.name] if getattr(error, 'op', None) is not None else []
    names += _FAILING_NODE.findall(error.message or '')
    for name in names:
        for op in (LABEL_CHECK_OP, SIZE_CHECK_OP, PARSE_OP, DECODE_OP):
            if re.search(r'(^|/)%s(_\d+)?(/|$)' % op, name):
                return op
    return None


def explain(error, data_path, split, label_offset, num_classes):
    """A DatasetError naming the record and the fix for an input-pipeline failure (label out of range,
    other feature keys, image too small to crop, undecodable image, damaged file), or None for errors of
    another op."""
    message = error.message
    if isinstance(error, tf.errors.DataLossError):
        return DatasetError('a %s record file is truncated or corrupt (%s); re-create the records with '
                            'make_tfrecords.py' % (split, message.splitlines()[0]))
    if not isinstance(error, tf.errors.InvalidArgumentError):
        return None
    op = failing_op(error)
    label = _LABEL_CHECK_TEXT.search(message)
    if op == LABEL_CHECK_OP and label:
        index, filename, stored = int(label.group(1)), label.group(2), int(label.group(3))
        if not os.path.isfile(os.path.join(data_path, DATASET_INFO_FILE)):
            offset_text = ('there is no %s in %s, so labels are read as ImageNet\'s 1..1000 (label_offset 1); '
                           'for 0-based labels add a %s with "label_offset": 0 and "num_classes", or re-create '
                           'the records with make_tfrecords.py' % (DATASET_INFO_FILE, data_path, DATASET_INFO_FILE))
        else:
            offset_text = ('check "num_classes" and "label_offset" in %s (or --num_classes)'
                           % os.path.join(data_path, DATASET_INFO_FILE))
        return DatasetError('record %d of %s stores label %d, which with label_offset %d is class %d, outside '
                            '[0, %d): %s' % (index, filename, stored, label_offset, stored - label_offset,
                                             num_classes, offset_text))
    size = _SIZE_CHECK_TEXT.search(message)
    if op == SIZE_CHECK_OP and size:
        return DatasetError('record %s of %s holds a %sx%s image, too small to crop (at least %dx%d pixels): '
                            'remove it from the photos and re-create the records with make_tfrecords.py, which '
                            'skips images below --min_image_side' % (size.group(1), size.group(2), size.group(3),
                                                                     size.group(4), MIN_IMAGE_SIDE, MIN_IMAGE_SIDE))
    feature = _FEATURE_MISSING.search(message)
    if op == PARSE_OP and feature:
        return DatasetError('the %s records in %s have no %s feature: expected image/encoded and '
                            'image/class/label as make_tfrecords.py and the ImageNet TFRecords hold them'
                            % (split, data_path, feature.group(1)))
    if op == DECODE_OP:
        where = find_undecodable(find_record_files(data_path, split))
        return DatasetError('%s holds an image that cannot be decoded (%s); re-create the records with '
                            'make_tfrecords.py, which checks every image' % (where, message.splitlines()[0]))
    return None


def find_undecodable(files, seconds=SCAN_SECONDS):
    """'record N of FILE' for the first record whose image the pipeline cannot decode, searched for at
    most `seconds` (only called after a failure), else a phrase naming the files."""
    deadline = time.time() + seconds
    with tf.Graph().as_default():
        image_bytes = tf.placeholder(tf.string, [])
        image = decode_crop_resize(image_bytes, 8, lambda shape: tf.stack([0, 0, shape[0], shape[1]]))
        with tf.Session() as sess:
            for path in files:
                for index, record in enumerate(tf.python_io.tf_record_iterator(path)):
                    if time.time() > deadline:
                        return 'one of the %d record files %s ... %s' % (len(files), files[0], files[-1])
                    example = tf.train.Example.FromString(record)
                    encoded = example.features.feature['image/encoded'].bytes_list.value
                    try:
                        sess.run(image, {image_bytes: encoded[0] if encoded else b''})
                    except tf.errors.OpError:
                        return 'record %d of %s' % (index, path)
    return 'one of the %d record files %s ... %s' % (len(files), files[0], files[-1])
