"""data/demo (scikit-learn digits as TFRecords): contents, and byte-identical regeneration."""

import importlib.util
import io
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import preprocess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(REPO_ROOT, 'data', 'demo')
# sklearn.datasets.load_digits() class counts for digits 0..9 (1,797 images).
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def demo_examples(split):
    """(label, decoded uint8 image) of every record of split."""
    examples = []
    for path in preprocess.find_record_files(DEMO_DIR, split):
        for record in tf.python_io.tf_record_iterator(path):
            feature = tf.train.Example.FromString(record).features.feature
            image = Image.open(io.BytesIO(feature['image/encoded'].bytes_list.value[0]))
            examples.append((feature['image/class/label'].int64_list.value[0], image))
    return examples


def test_demo_dataset_info_and_counts():
    info = preprocess.read_dataset_info(DEMO_DIR)
    assert info['num_classes'] == 10 and info['label_offset'] == 0
    assert info['num_examples'] == {'train': 1438, 'validation': 359}
    assert preprocess.load_labels(info['labels_file']) == [str(d) for d in range(10)]
    for split in ('train', 'validation'):
        files = preprocess.find_record_files(DEMO_DIR, split)
        assert preprocess.count_records(files) == info['num_examples'][split]
    assert sum(os.path.getsize(os.path.join(DEMO_DIR, f)) for f in os.listdir(DEMO_DIR)) < 4e6


def test_demo_records_are_32x32_digits_with_the_sklearn_class_counts():
    train, validation = demo_examples('train'), demo_examples('validation')
    for _, image in train + validation:
        assert image.format == 'JPEG' and image.mode == 'RGB' and image.size == (32, 32)
    per_class = np.bincount([label for label, _ in train + validation], minlength=10)
    assert list(per_class) == DIGIT_COUNTS
    held_out = np.bincount([label for label, _ in validation], minlength=10)
    assert list(held_out) == [int(round(n * 0.2)) for n in DIGIT_COUNTS]
    pixels = np.stack([np.asarray(image) for _, image in validation[:50]])
    assert pixels.min() < 30 and pixels.max() > 220  # dark background, bright strokes


def test_demo_validation_through_the_eval_pipeline():
    with tf.Graph().as_default():
        dataset = preprocess.build_dataset(DEMO_DIR, False, 32, 128)
        next_batch = tf.data.make_one_shot_iterator(dataset).get_next()
        labels = []
        with tf.Session() as session:
            while True:
                try:
                    images, batch_labels = session.run(next_batch)
                except tf.errors.OutOfRangeError:
                    break
                assert images.shape == (128, 32, 32, 3)
                labels.extend(batch_labels[batch_labels >= 0])
    assert len(labels) == 359 and set(labels) == set(range(10))


def test_regenerating_the_demo_data_gives_identical_bytes(tmp_path):
    pytest.importorskip(
        'sklearn',
        reason='scikit-learn not installed: demo regeneration not checked '
        "(pip install 'scikit-learn<1.1' to run it)",
    )
    spec = importlib.util.spec_from_file_location(
        'make_demo_data', os.path.join(REPO_ROOT, 'scripts', 'make_demo_data.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output_dir = str(tmp_path / 'demo')
    module.make_demo_data(output_dir)
    assert sorted(os.listdir(output_dir)) == sorted(os.listdir(DEMO_DIR))
    for name in os.listdir(DEMO_DIR):
        with open(os.path.join(DEMO_DIR, name), 'rb') as committed:
            with open(os.path.join(output_dir, name), 'rb') as regenerated:
                assert committed.read() == regenerated.read(), name
