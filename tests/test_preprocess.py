"""preprocess.py: official eval match, training crops/flips, the tf.data pipeline and its errors."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import preprocess


def encode(array, fmt='JPEG'):
    output = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(output, format=fmt, quality=95)
    return output.getvalue()


def run(tensors):
    with tf.Session() as session:
        return session.run(tensors)


def gradient_image(height=64, width=64):
    """Brightness rises left to right in every channel, so a horizontal flip is easy to detect."""
    row = np.linspace(0, 255, width)
    return np.repeat(np.tile(row, (height, 1))[:, :, None], 3, axis=2).astype(np.uint8)


def write_records(path, images_and_labels):
    with tf.io.TFRecordWriter(path) as writer:
        for image_bytes, label in images_and_labels:
            features = tf.train.Features(
                feature={
                    'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
                    'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }
            )
            writer.write(tf.train.Example(features=features).SerializeToString())


def read_all(dataset):
    """Every batch of a finite dataset as numpy arrays."""
    next_batch = tf.data.make_one_shot_iterator(dataset).get_next()
    batches = []
    with tf.Session() as session:
        while True:
            try:
                batches.append(session.run(next_batch))
            except tf.errors.OutOfRangeError:
                return batches


@pytest.fixture(autouse=True)
def fresh_graph():
    with tf.Graph().as_default():
        yield


def test_eval_preprocessing_matches_official_golden_images(fixture_dir):
    with open(os.path.join(fixture_dir, 'golden.json')) as f:
        golden = json.load(f)
    expected = np.load(os.path.join(fixture_dir, 'golden.npz'))['images']
    images = run(
        tf.stack(
            [
                preprocess.decode_and_preprocess_file(os.path.join(fixture_dir, 'photos', name), 224)
                for name in golden['photos']
            ]
        )
    )
    assert images.shape == (4, 224, 224, 3) and images.dtype == np.float32
    assert np.abs(images - expected).max() <= 0.5


def test_eval_decodes_png_with_the_same_centre_crop():
    rng = np.random.RandomState(0)
    array = rng.randint(0, 256, (40, 60, 3)).astype(np.uint8)
    crop = int(16 / (16 + 2) * 40)  # padding round(16 / 7) = 2: 35 of the short side, centred
    top, left = (40 - crop + 1) // 2, (60 - crop + 1) // 2
    expected = tf.image.resize_bicubic(array[None, top : top + crop, left : left + crop], [16, 16])[0]
    got, want = run([preprocess.preprocess_for_eval(encode(array, 'PNG'), 16), expected])
    assert got.shape == (16, 16, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_crop_padding_follows_the_official_rule():
    assert preprocess.crop_padding(224) == 32
    assert [preprocess.crop_padding(size) for size in (240, 260, 300, 380, 600)] == [34, 37, 43, 54, 86]
    assert preprocess.crop_padding(32) == 5


def test_decode_and_preprocess_file_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(preprocess.DatasetError, match='not found'):
        preprocess.decode_and_preprocess_file(str(tmp_path / 'nope.jpg'), 224)


def test_train_preprocessing_shape_dtype_range_and_crops_vary():
    rng = np.random.RandomState(1)
    image_bytes = encode(rng.randint(0, 256, (60, 80, 3)))
    dataset = tf.data.Dataset.from_tensors(image_bytes).repeat(16)
    dataset = dataset.map(lambda b: preprocess.preprocess_for_train(b, 24)).batch(16)
    images = read_all(dataset)[0]
    assert images.shape == (16, 24, 24, 3) and images.dtype == np.float32
    assert -80 < images.min() < 40 and 215 < images.max() < 340  # bicubic may overshoot
    distinct = {images[i].tobytes() for i in range(16)}
    assert len(distinct) >= 12


def test_train_crop_window_falls_back_to_the_eval_centre_crop():
    shape = tf.constant([100, 80, 3])
    full = preprocess._train_crop_window(shape, tf.constant([0, 0, 0]), tf.constant([100, 80, -1]), 224)
    sampled = preprocess._train_crop_window(shape, tf.constant([5, 7, 0]), tf.constant([50, 60, -1]), 224)
    centre = preprocess._center_crop_window(shape, 224)
    full, sampled, centre = run([full, sampled, centre])
    crop = int(224 / 256 * 80)
    assert list(centre) == [(100 - crop + 1) // 2, (80 - crop + 1) // 2, crop, crop]
    assert list(full) == list(centre)
    assert list(sampled) == [5, 7, 50, 60]


def test_train_on_an_unsampleable_image_equals_eval_up_to_a_flip():
    # 8x400: no crop with aspect 3/4..4/3 covers >= 8% of it, so sampling returns the whole image.
    image_bytes = encode(np.random.RandomState(2).randint(0, 256, (8, 400, 3)))
    train = [preprocess.preprocess_for_train(image_bytes, 16) for _ in range(6)]
    train, evaluated = run([train, preprocess.preprocess_for_eval(image_bytes, 16)])
    for image in train:
        assert np.allclose(image, evaluated, atol=1e-4) or np.allclose(image, evaluated[:, ::-1], atol=1e-4)


def test_train_flips_about_half_the_time():
    # A fixed graph seed fixes the flips (the crops stay random: sample_distorted_bounding_box does not read
    # it), so the count below is the same on every run, not a Binomial(200, 0.5) draw.
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        dataset = tf.data.Dataset.from_tensors(encode(gradient_image())).repeat(200)
        dataset = dataset.map(lambda b: preprocess.preprocess_for_train(b, 16)).batch(200)
        images = read_all(dataset)[0]
    left, right = images[:, :, 0].mean(axis=(1, 2)), images[:, :, -1].mean(axis=(1, 2))
    assert np.all(np.abs(left - right) > 5)  # every crop keeps a visible gradient
    flipped = int(np.sum(left > right))
    assert 60 <= flipped <= 140  # Binomial(200, 0.5): mean 100, sd 7


@pytest.mark.parametrize('augment_name', ['autoaugment', 'randaugment'])
def test_train_with_augmentation_keeps_shape_and_range(augment_name):
    image_bytes = encode(np.random.RandomState(3).randint(0, 256, (40, 40, 3)))
    dataset = (
        tf.data.Dataset.from_tensors(image_bytes)
        .repeat(8)
        .map(lambda b: preprocess.preprocess_for_train(b, 16, augment_name, 2, 10))
        .batch(8)
    )
    images = read_all(dataset)[0]
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255
    assert np.all(images == np.round(images))  # augmentation works on uint8 pixels


def test_unknown_augment_name_is_rejected():
    with pytest.raises(ValueError, match='augment_name'):
        preprocess.preprocess_for_train(tf.constant(b''), 16, 'mixup')


@pytest.fixture
def eval_records(tmp_path):
    """1,001 tiny 8x8 JPEGs with labels 1..5 (ImageNet-style offset 1) in 3 validation shards."""
    rng = np.random.RandomState(4)
    pixels = [encode(rng.randint(0, 256, (8, 8, 3))) for _ in range(7)]
    examples = [(pixels[i % 7], i % 5 + 1) for i in range(1001)]
    for shard, (start, stop) in enumerate([(0, 400), (400, 800), (800, 1001)]):
        write_records(str(tmp_path / ('validation-%05d-of-00003' % shard)), examples[start:stop])
    return str(tmp_path), [label - 1 for _, label in examples]


def test_eval_dataset_yields_every_image_once_with_padded_last_batch(eval_records):
    data_path, labels = eval_records
    dataset = preprocess.build_dataset(data_path, False, 16, 64)
    assert tf.data.get_output_shapes(dataset) == (tf.TensorShape([64, 16, 16, 3]), tf.TensorShape([64]))
    batches = read_all(dataset)
    assert len(batches) == 16
    got = np.concatenate([batch_labels for _, batch_labels in batches])
    assert np.sum(got >= 0) == 1001
    assert list(got[got >= 0]) == labels  # files and records in order
    assert list(got[1001:]) == [-1] * (16 * 64 - 1001)
    assert batches[-1][0].shape == (64, 16, 16, 3) and not batches[-1][0][41:].any()


@pytest.mark.parametrize('num_workers', [2, 4])  # 2: shard by file; 4 > 3 files: by record
def test_eval_workers_together_see_every_image_once(eval_records, num_workers):
    data_path, labels = eval_records
    seen = []
    for worker in range(num_workers):
        for _, batch_labels in read_all(preprocess.build_dataset(data_path, False, 16, 64, num_workers, worker)):
            seen.extend(batch_labels[batch_labels >= 0])
    assert len(seen) == 1001
    assert np.array_equal(np.bincount(seen), np.bincount(labels))


def test_train_dataset_from_train_tf_folder_repeats_with_static_shapes(tmp_path):
    folder = tmp_path / 'train_tf'
    folder.mkdir()
    rng = np.random.RandomState(5)
    write_records(
        str(folder / 'part0.tfrecord'), [(encode(rng.randint(0, 256, (12, 10, 3))), i % 3) for i in range(30)]
    )
    write_records(
        str(folder / 'part1.tfrecord'), [(encode(rng.randint(0, 256, (12, 10, 3)), 'PNG'), 3) for _ in range(10)]
    )
    (tmp_path / 'dataset_info.json').write_text(
        json.dumps(
            {'num_classes': 4, 'label_offset': 0, 'num_examples': {'train': 40, 'validation': 0}, 'labels_file': None}
        )
    )
    dataset = preprocess.build_dataset(str(tmp_path), True, 16, 32, num_workers=3, worker_index=1, seed=1)
    assert tf.data.get_output_shapes(dataset) == (tf.TensorShape([32, 16, 16, 3]), tf.TensorShape([32]))
    next_batch = tf.data.make_one_shot_iterator(dataset).get_next()
    with tf.Session() as session:
        labels = np.concatenate([session.run(next_batch)[1] for _ in range(3)])  # > 1 epoch
    assert set(labels) <= {0, 1, 2, 3} and len(set(labels)) >= 2


def test_find_record_files_layouts_and_errors(tmp_path):
    with pytest.raises(preprocess.DatasetError, match='does not exist'):
        preprocess.find_record_files(str(tmp_path / 'missing'), 'train')
    with pytest.raises(preprocess.DatasetError, match='is empty'):
        preprocess.find_record_files(str(tmp_path), 'train')
    (tmp_path / 'readme.txt').write_text('x')
    with pytest.raises(preprocess.DatasetError, match=r'train-\*.*train_tf'):
        preprocess.find_record_files(str(tmp_path), 'train')
    for name in ['train-00001-of-00002', 'train-00000-of-00002', 'validation-00000-of-00001']:
        (tmp_path / name).write_bytes(b'')
    assert [os.path.basename(p) for p in preprocess.find_record_files(str(tmp_path), 'train')] == [
        'train-00000-of-00002',
        'train-00001-of-00002',
    ]
    (tmp_path / 'valid_tf').mkdir()
    with pytest.raises(ValueError, match='split'):
        preprocess.find_record_files(str(tmp_path), 'test')


def test_count_records_and_truncated_or_corrupt_files(tmp_path):
    path = str(tmp_path / 'validation-00000-of-00001')
    write_records(path, [(encode(np.zeros((8, 8, 3))), 1)] * 5)
    assert preprocess.count_records([path]) == 5
    data = open(path, 'rb').read()
    truncated = str(tmp_path / 'truncated')
    with open(truncated, 'wb') as f:
        f.write(data[:-10])
    corrupt = str(tmp_path / 'corrupt')
    with open(corrupt, 'wb') as f:
        f.write(data[:40] + bytes(b ^ 0xFF for b in data[40:50]) + data[50:])
    for bad in (truncated, corrupt):
        with pytest.raises(preprocess.DatasetError, match='truncated or corrupt'):
            preprocess.count_records([path, bad])
    os.remove(path)
    os.rename(truncated, path)
    with pytest.raises(tf.errors.DataLossError):  # the pipeline fails too, it does not hang
        read_all(preprocess.build_dataset(str(tmp_path), False, 8, 4))


def test_dataset_info_defaults_file_and_labels(tmp_path):
    info = preprocess.read_dataset_info(str(tmp_path))
    assert info == {
        'num_classes': 1000,
        'label_offset': 1,
        'num_examples': {'train': None, 'validation': None},
        'labels_file': None,
    }
    (tmp_path / 'labels.txt').write_text('cat\ndog\n\n')
    (tmp_path / 'dataset_info.json').write_text(
        json.dumps(
            {
                'num_classes': 2,
                'label_offset': 0,
                'num_examples': {'train': 7, 'validation': 3},
                'labels_file': 'labels.txt',
            }
        )
    )
    info = preprocess.read_dataset_info(str(tmp_path))
    assert info['num_classes'] == 2 and info['label_offset'] == 0
    assert info['num_examples'] == {'train': 7, 'validation': 3}
    assert preprocess.load_labels(info['labels_file']) == ['cat', 'dog']
    (tmp_path / 'dataset_info.json').write_text('{not json')
    with pytest.raises(preprocess.DatasetError, match='dataset info'):
        preprocess.read_dataset_info(str(tmp_path))
    with pytest.raises(preprocess.DatasetError, match='labels file'):
        preprocess.load_labels(str(tmp_path / 'missing.txt'))


def test_whole_image_crops_without_flips_equal_the_eval_preprocessing():
    rng = np.random.RandomState(5)
    for shape in ((40, 60, 3), (48, 48, 3)):
        image_bytes = encode(rng.randint(0, 256, shape).astype(np.uint8), 'JPEG')
        train = [preprocess.preprocess_for_train(image_bytes, 16, min_crop_area=1.0, random_flip=False)
                 for _ in range(4)]
        outputs = run(train + [preprocess.preprocess_for_eval(image_bytes, 16)])
        for output in outputs[:-1]:
            np.testing.assert_array_equal(output, outputs[-1])
    with pytest.raises(ValueError, match='min_crop_area'):
        preprocess.preprocess_for_train(image_bytes, 16, min_crop_area=0.0)
