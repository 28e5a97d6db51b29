"""A folder of class subfolders of images converted into the sharded TFRecords preprocess.py reads
(make_tfrecords.py is the command line; its docstring says what a user gets).

Records are written into a staging folder inside the output and moved in only when the conversion
succeeded, so a failed or interrupted run leaves the records already there untouched.
"""
import concurrent.futures
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import tempfile
import threading

import numpy as np
import tensorflow.compat.v1 as tf
from absl import logging
from PIL import Image

import preprocess

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm')
LABEL_OFFSET = 0
JPEG_QUALITY = 95
RECORD_NAME = re.compile(r'^(train|validation)-\d{5}-of-\d{5}$')
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
UNBALANCED_RATIO = 3.0
MAX_LOGGED_CLASSES = 50
# The 8x8 digits of scikit-learn are the smallest images classification sets hold; below 2 pixels a side
# the training and evaluation crops are empty (preprocess.MIN_IMAGE_SIDE).
DEFAULT_MIN_IMAGE_SIDE = 8
MAX_LISTED_FILES = 10


class RecordsConversionError(ValueError):
    """Bad input or output folder; the message says what to fix."""


class RecordsConversionInterrupted(Exception):
    """Ctrl-C (or SIGTERM turned into KeyboardInterrupt) stopped the conversion; nothing was moved into place."""

    def __init__(self, converted, total):
        super(RecordsConversionInterrupted, self).__init__(converted, total)
        self.converted, self.total = converted, total


def _list_classes(input_dir):
    """[(class name, sorted image paths)] for the sorted class subfolders of input_dir."""
    if not os.path.isdir(input_dir):
        raise RecordsConversionError(
            'input folder %s does not exist; pass --input_dir holding one ' 'subfolder of images per class' % input_dir
        )
    names = sorted(
        name
        for name in os.listdir(input_dir)
        if not name.startswith('.') and os.path.isdir(os.path.join(input_dir, name))
    )
    if not names:
        raise RecordsConversionError(
            'input folder %s has no class subfolders; put the images of each class '
            'in their own subfolder (e.g. %s/cat/1.jpg)' % (input_dir, input_dir)
        )
    classes = []
    for name in names:
        folder = os.path.join(input_dir, name)
        paths = sorted(
            os.path.join(folder, f)
            for f in os.listdir(folder)
            if not f.startswith('.')
            and f.lower().endswith(IMAGE_EXTENSIONS)
            and os.path.isfile(os.path.join(folder, f))
        )
        if not paths:
            raise RecordsConversionError(
                'class folder %s has no images (%s); add images or remove the folder'
                % (folder, ', '.join(IMAGE_EXTENSIONS))
            )
        classes.append((name, paths))
    return classes


def _split(classes, validation_fraction, seed):
    """Seeded per-class split: (train, validation) lists of (path, label, class name)."""
    rng = random.Random(seed)
    train, validation = [], []
    for label, (name, paths) in enumerate(classes):
        paths = list(paths)
        rng.shuffle(paths)
        num_validation = min(int(round(len(paths) * validation_fraction)), len(paths) - 1)
        examples = [(path, label + LABEL_OFFSET, name) for path in paths]
        validation.extend(examples[:num_validation])
        train.extend(examples[num_validation:])
    rng.shuffle(train)
    return train, validation


def to_rgb(image):
    """Pillow image of any common mode -> RGB; transparency is composited on white."""
    if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
        values = np.asarray(image, dtype=np.float64)
        if values.max() > 255:
            values = values * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), 'L')
    if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
        rgba = image.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert('RGB')


def encode_image(path):
    """(JPEG bytes, height, width) of the image file at path; raises on unreadable files."""
    with open(path, 'rb') as f:
        data = f.read()
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.format == 'JPEG' and image.mode == 'RGB':
        return data, image.height, image.width
    image = to_rgb(image)
    output = io.BytesIO()
    image.save(output, format='JPEG', quality=JPEG_QUALITY)
    return output.getvalue(), image.height, image.width


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


class Progress(object):
    """Logs 'converted N/total images' about every tenth of the work, from the writer threads."""

    def __init__(self, total):
        self.total, self.done, self.next_report = total, 0, max(1, total // 10)
        self.lock = threading.Lock()

    def add(self):
        with self.lock:
            self.done += 1
            if self.done >= self.next_report or self.done == self.total:
                logging.info('converted %d/%d images', self.done, self.total)
                self.next_report = self.done + max(1, self.total // 10)


def unbalanced_warning(counts_by_class, ratio=UNBALANCED_RATIO):
    """A sentence when the largest class has more than `ratio` times the images of the smallest, else None."""
    if len(counts_by_class) < 2:
        return None
    largest = max(counts_by_class, key=counts_by_class.get)
    smallest = min(counts_by_class, key=counts_by_class.get)
    if counts_by_class[largest] <= ratio * counts_by_class[smallest]:
        return None
    return ('unbalanced classes: %s has %d images, %s only %d (more than %gx): the model will favour the large '
            'classes; add images to the small ones, or read the per-class accuracy test.py prints'
            % (largest, counts_by_class[largest], smallest, counts_by_class[smallest], ratio))


def _write_shard(output_path, examples, input_dir, progress=None, cancelled=None,
                 min_image_side=DEFAULT_MIN_IMAGE_SIDE):
    """Writes one shard, stopping at the next image once `cancelled` (a threading.Event) is set; returns
    (number written, unreadable paths, paths of images with a side below min_image_side)."""
    written, skipped, too_small = 0, [], []
    with tf.io.TFRecordWriter(output_path) as writer:
        for path, label, name in examples:
            if cancelled is not None and cancelled.is_set():
                break
            if progress is not None:
                progress.add()
            try:
                encoded, height, width = encode_image(path)
            except READ_ERRORS as e:
                logging.warning('skipping unreadable image %s: %s', path, e)
                skipped.append(path)
                continue
            if min(height, width) < min_image_side:
                too_small.append(path)
                continue
            features = {
                'image/encoded': _bytes_feature(encoded),
                'image/format': _bytes_feature(b'JPEG'),
                'image/class/label': _int_feature(label),
                'image/class/text': _bytes_feature(name.encode('utf-8')),
                'image/height': _int_feature(height),
                'image/width': _int_feature(width),
                'image/filename': _bytes_feature(os.path.relpath(path, input_dir).encode('utf-8')),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)
            )
            written += 1
    return written, skipped, too_small


def _shard_jobs(split, examples, num_shards, output_dir):
    """[(output path, examples)] with contiguous, near-equal chunks; no empty shards."""
    num_shards = max(1, min(num_shards, len(examples))) if examples else 0
    bounds = np.linspace(0, len(examples), num_shards + 1).astype(int)
    return [
        (os.path.join(output_dir, '%s-%05d-of-%05d' % (split, i, num_shards)), examples[bounds[i] : bounds[i + 1]])
        for i in range(num_shards)
    ]


def _prepare_output_dir(output_dir, input_dir, overwrite):
    """Creates output_dir; refuses existing records unless overwrite; returns the names of the old records."""
    output_abs = os.path.abspath(output_dir)
    input_abs = os.path.abspath(input_dir)
    if output_abs == input_abs or output_abs.startswith(input_abs + os.sep):
        raise RecordsConversionError(
            'output folder %s is inside the input folder %s; choose an --output_dir '
            'outside it' % (output_dir, input_dir)
        )
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise RecordsConversionError('output path %s is a file; pass a folder as --output_dir' % output_dir)
    os.makedirs(output_dir, exist_ok=True)
    old_records = sorted(name for name in os.listdir(output_dir) if RECORD_NAME.match(name))
    if old_records and not overwrite:
        raise RecordsConversionError(
            'output folder %s already holds records (%s, ...); pass --overwrite to '
            'replace them or choose another --output_dir' % (output_dir, old_records[0])
        )
    return old_records


def _check_complete(classes, counts_by_class, counts, validation_fraction, skipped, too_small=()):
    """An empty class or an empty split that was asked for is an error: training or evaluation on it
    would quietly miss classes or report nothing."""
    unreadable = ' (%d unreadable files, e.g. %s)' % (len(skipped), skipped[0]) if skipped else ''
    if too_small:
        unreadable += ' (%d images too small, e.g. %s)' % (len(too_small), too_small[0])
    empty = [name for name, _ in classes if not counts_by_class.get(name)]
    if empty:
        raise RecordsConversionError('class folder(s) %s have no readable image%s; add images or remove the folder'
                              % (', '.join(empty), unreadable))
    if not counts['train']:
        raise RecordsConversionError('no training image could be written%s' % unreadable)
    if validation_fraction > 0 and not counts['validation']:
        raise RecordsConversionError('no validation image could be written%s: add images, raise --validation_fraction, '
                              'or pass --validation_fraction=0 to make no validation split' % unreadable)


@contextlib.contextmanager
def _sigint_ignored():
    """Ctrl-C is ignored while the old records are swapped for the new ones (milliseconds), so an interrupt
    never leaves the folder with neither."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _move_into_place(staging_dir, output_dir, old_records):
    """Replaces the old records by the staged ones: the old ones are removed only now, after success."""
    for name in old_records:
        os.remove(os.path.join(output_dir, name))
    for name in sorted(os.listdir(staging_dir)):
        os.replace(os.path.join(staging_dir, name), os.path.join(output_dir, name))


def convert(
    input_dir,
    output_dir,
    validation_fraction=0.1,
    train_shards=16,
    validation_shards=4,
    num_workers=4,
    seed=0,
    overwrite=False,
    source=None,
    min_image_side=DEFAULT_MIN_IMAGE_SIDE,
):
    """Converts input_dir into TFRecords in output_dir; returns a summary dict."""
    if not 0.0 <= validation_fraction < 1.0:
        raise RecordsConversionError('validation_fraction must be in [0, 1), got %r' % validation_fraction)
    if train_shards < 1 or validation_shards < 1 or num_workers < 1:
        raise RecordsConversionError('train_shards, validation_shards and num_workers must be >= 1')
    if min_image_side < preprocess.MIN_IMAGE_SIDE:
        raise RecordsConversionError('min_image_side must be >= %d (smaller images cannot be cropped), got %r'
                              % (preprocess.MIN_IMAGE_SIDE, min_image_side))
    classes = _list_classes(input_dir)
    train, validation = _split(classes, validation_fraction, seed)
    old_records = _prepare_output_dir(output_dir, input_dir, overwrite)
    staging_dir = tempfile.mkdtemp(prefix='.make_tfrecords-', dir=output_dir)
    try:
        jobs = _shard_jobs('train', train, train_shards, staging_dir) + _shard_jobs(
            'validation', validation, validation_shards, staging_dir
        )
        progress = Progress(len(train) + len(validation))
        cancelled = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
            try:
                results = list(pool.map(
                    lambda job: _write_shard(job[0], job[1], input_dir, progress, cancelled, min_image_side), jobs))
            except KeyboardInterrupt:
                cancelled.set()  # the pool's exit waits for the workers: each stops at its next image
                raise RecordsConversionInterrupted(progress.done, progress.total) from None

        counts = {'train': 0, 'validation': 0}
        skipped, too_small = [], []
        for (path, _), (written, bad, small) in zip(jobs, results):
            counts[os.path.basename(path).split('-')[0]] += written
            skipped.extend(bad)
            too_small.extend(small)
        skipped.sort()
        too_small.sort()
        if too_small:
            logging.warning('skipped %d images smaller than %dx%d pixels: %s', len(too_small), min_image_side,
                            min_image_side, ', '.join(too_small))
        bad_paths = set(skipped) | set(too_small)
        counts_by_class = {}
        for path, _, name in train + validation:
            if path not in bad_paths:
                counts_by_class[name] = counts_by_class.get(name, 0) + 1
        _check_complete(classes, counts_by_class, counts, validation_fraction, skipped, too_small)
        for name, _ in classes[:MAX_LOGGED_CLASSES]:
            logging.info('class %s: %d images', name, counts_by_class[name])
        if len(classes) > MAX_LOGGED_CLASSES:
            logging.info('... and %d more classes', len(classes) - MAX_LOGGED_CLASSES)
        warning = unbalanced_warning(counts_by_class)
        if warning:
            logging.warning(warning)
        with open(os.path.join(staging_dir, preprocess.LABELS_FILE), 'w') as f:
            f.writelines(name + '\n' for name, _ in classes)
        info = {
            'num_classes': len(classes),
            'label_offset': LABEL_OFFSET,
            'num_examples': counts,
            'labels_file': preprocess.LABELS_FILE,
            'source': source or os.path.abspath(input_dir),
            'created_by': 'make_tfrecords.py',
        }
        with open(os.path.join(staging_dir, preprocess.DATASET_INFO_FILE), 'w') as f:
            json.dump(info, f, indent=2, sort_keys=True)
            f.write('\n')
        with _sigint_ignored():
            _move_into_place(staging_dir, output_dir, old_records)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return dict(info, output_dir=output_dir, skipped=skipped, too_small=too_small, min_image_side=min_image_side,
                files=[os.path.join(output_dir, os.path.basename(path)) for path, _ in jobs])


def describe(summary):
    """One line saying what convert() wrote."""
    return 'wrote %d train and %d validation images of %d classes to %s' % (
        summary['num_examples']['train'],
        summary['num_examples']['validation'],
        summary['num_classes'],
        summary['output_dir'],
    )
