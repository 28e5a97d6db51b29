"""make_tfrecords.py: mixed image formats in, RGB JPEG records out, readable by preprocess.py."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import preprocess
from effnet.data import photo_records

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save(image, path, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)


def noise(mode, size=(20, 16), seed=0):
    channels = {'L': 1, 'RGB': 3, 'RGBA': 4, 'CMYK': 4}[mode]
    array = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], channels)).astype(np.uint8)
    return Image.fromarray(array.squeeze(), mode)


@pytest.fixture
def image_tree(tmp_path):
    """3 classes: 6 RGB JPEG/PNG cats (+1 corrupt file, +1 note), 4 grey/palette dogs, 4 odd emus."""
    root = tmp_path / 'images'
    for i in range(4):
        save(noise('RGB', seed=i), str(root / 'cat' / ('%d.jpg' % i)), quality=90)
    for i in range(2):
        save(noise('RGB', seed=10 + i), str(root / 'cat' / ('%d.png' % i)))
    (root / 'cat' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 definitely not a jpeg')
    (root / 'cat' / 'notes.txt').write_text('not an image, ignored')
    save(noise('L', seed=20), str(root / 'dog' / 'grey.png'))
    save(noise('L', seed=21), str(root / 'dog' / 'grey.jpg'))
    save(noise('RGB', seed=22).convert('P'), str(root / 'dog' / 'palette.png'))
    save(noise('RGB', seed=23).convert('P'), str(root / 'dog' / 'palette.gif'))
    transparent = Image.new('RGBA', (20, 16), (255, 0, 0, 255))
    transparent.paste((0, 0, 255, 0), (0, 0, 10, 16))  # left half fully transparent
    save(transparent, str(root / 'emu' / 'rgba.png'))
    save(Image.new('CMYK', (20, 16), (0, 255, 255, 0)), str(root / 'emu' / 'cmyk.jpg'))  # red
    save(Image.fromarray(np.full((16, 20), 40000, np.uint16)), str(root / 'emu' / 'deep.png'))
    save(noise('RGBA', seed=24), str(root / 'emu' / 'noise_rgba.png'))
    return str(root)


def read_examples(files):
    examples = []
    for path in files:
        for record in tf.python_io.tf_record_iterator(path):
            feature = tf.train.Example.FromString(record).features.feature
            examples.append(
                {
                    key: (value.bytes_list.value[0] if value.bytes_list.value else value.int64_list.value[0])
                    for key, value in feature.items()
                }
            )
    return examples


def test_convert_mixed_formats_round_trip(image_tree, tmp_path):
    output_dir = str(tmp_path / 'records')
    summary = photo_records.convert(
        image_tree, output_dir, validation_fraction=0.25, train_shards=2, validation_shards=1, num_workers=2, seed=3
    )
    assert summary['skipped'] == [os.path.join(image_tree, 'cat', 'broken.jpg')]
    # Per class round(n * 0.25) held out: cat 7 -> 2, dog 4 -> 1, emu 4 -> 1; minus the corrupt file.
    _, planned = photo_records._split(photo_records._list_classes(image_tree), 0.25, 3)
    assert [label for _, label, _ in planned] == [0, 0, 1, 2]
    readable = [path for path, _, _ in planned if not path.endswith('broken.jpg')]
    assert summary['num_examples'] == {'train': 14 - len(readable), 'validation': len(readable)}
    assert sorted(os.listdir(output_dir)) == [
        'dataset_info.json',
        'labels.txt',
        'train-00000-of-00002',
        'train-00001-of-00002',
        'validation-00000-of-00001',
    ]
    with open(os.path.join(output_dir, 'dataset_info.json')) as f:
        info = json.load(f)
    assert info['num_classes'] == 3 and info['label_offset'] == 0
    assert info['num_examples'] == summary['num_examples'] and info['labels_file'] == 'labels.txt'
    assert info['created_by'] == 'make_tfrecords.py'
    assert preprocess.load_labels(os.path.join(output_dir, 'labels.txt')) == ['cat', 'dog', 'emu']

    examples = read_examples(summary['files'])
    assert len(examples) == 14
    for example in examples:
        image = Image.open(io.BytesIO(example['image/encoded']))
        assert image.format == 'JPEG' and image.mode == 'RGB' and example['image/format'] == b'JPEG'
        assert (image.height, image.width) == (example['image/height'], example['image/width'])
        class_name = example['image/class/text'].decode()
        assert ['cat', 'dog', 'emu'][example['image/class/label']] == class_name
        assert example['image/filename'].decode().split('/')[0] == example['image/class/text'].decode()
    by_name = {example['image/filename'].decode(): example for example in examples}
    original = open(os.path.join(image_tree, 'cat', '0.jpg'), 'rb').read()
    assert by_name['cat/0.jpg']['image/encoded'] == original  # RGB JPEG kept as is
    rgba = np.asarray(Image.open(io.BytesIO(by_name['emu/rgba.png']['image/encoded'])), np.int32)
    assert np.abs(rgba[:, :8] - 255).max() < 12  # transparent -> white
    assert np.abs(rgba[:, 12:] - [255, 0, 0]).max() < 12  # opaque red stays red
    cmyk = np.asarray(Image.open(io.BytesIO(by_name['emu/cmyk.jpg']['image/encoded'])), np.int32)
    assert np.abs(cmyk - [255, 0, 0]).max() < 12
    deep = np.asarray(Image.open(io.BytesIO(by_name['emu/deep.png']['image/encoded'])), np.int32)
    assert np.abs(deep - round(40000 * 255 / 65535)).max() < 3  # 16-bit scaled, not clipped
    per_class = np.bincount([example['image/class/label'] for example in examples])
    assert list(per_class) == [6, 4, 4]

    with tf.Graph().as_default():
        dataset = preprocess.build_dataset(output_dir, False, 16, 4)
        labels = np.concatenate([batch_labels for _, batch_labels in _read_all(dataset)])
        validation = [e['image/class/label'] for e in read_examples(summary['files'][-1:])]
        assert list(labels[labels >= 0]) == validation
        train = preprocess.build_dataset(output_dir, True, 16, 8, seed=0)
        # Closed inside the graph's scope: a Session left to the garbage collector can crash TF 1.15
        # (seen: a segfault in Session.__del__ while its prefetching iterator was still running).
        with tf.Session() as sess:
            images, labels = sess.run(tf.data.make_one_shot_iterator(train).get_next())
    assert images.shape == (8, 16, 16, 3) and set(labels) <= {0, 1, 2}


def _read_all(dataset):
    next_batch = tf.data.make_one_shot_iterator(dataset).get_next()
    with tf.Session() as session:
        while True:
            try:
                yield session.run(next_batch)
            except tf.errors.OutOfRangeError:
                return


def test_split_is_stratified_and_seeded(tmp_path):
    classes = [('a', ['a/%02d.png' % i for i in range(20)]), ('b', ['b/%02d.png' % i for i in range(9)])]
    train, validation = photo_records._split(classes, 0.2, seed=7)
    assert [label for _, label, _ in validation].count(0) == 4
    assert [label for _, label, _ in validation].count(1) == 2
    assert len(train) == 23
    assert photo_records._split(classes, 0.2, seed=7) == (train, validation)
    assert photo_records._split(classes, 0.2, seed=8) != (train, validation)


def test_rerun_needs_overwrite_which_replaces_only_records(image_tree, tmp_path):
    output_dir = str(tmp_path / 'records')
    photo_records.convert(image_tree, output_dir, train_shards=3, validation_shards=1, num_workers=1)
    keep = os.path.join(output_dir, 'my_notes.txt')
    with open(keep, 'w') as f:
        f.write('mine')
    with pytest.raises(photo_records.RecordsConversionError, match='--overwrite'):
        photo_records.convert(image_tree, output_dir, train_shards=2, validation_shards=1)
    summary = photo_records.convert(image_tree, output_dir, train_shards=2, validation_shards=1, overwrite=True)
    assert sorted(os.listdir(output_dir)) == [
        'dataset_info.json',
        'labels.txt',
        'my_notes.txt',
        'train-00000-of-00002',
        'train-00001-of-00002',
        'validation-00000-of-00001',
    ]
    assert (
        preprocess.count_records(preprocess.find_record_files(output_dir, 'train')) == summary['num_examples']['train']
    )


def test_output_is_deterministic(image_tree, tmp_path):
    for name in ('one', 'two'):
        photo_records.convert(
            image_tree,
            str(tmp_path / name),
            validation_fraction=0.25,
            train_shards=2,
            validation_shards=1,
            num_workers=2,
            seed=5,
            source='fixed',
        )
    for name in sorted(os.listdir(str(tmp_path / 'one'))):
        assert (tmp_path / 'one' / name).read_bytes() == (tmp_path / 'two' / name).read_bytes(), name


def test_bad_input_folders_are_clear_errors(tmp_path):
    output_dir = str(tmp_path / 'out')
    with pytest.raises(photo_records.RecordsConversionError, match='does not exist'):
        photo_records.convert(str(tmp_path / 'missing'), output_dir)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(photo_records.RecordsConversionError, match='no class subfolders'):
        photo_records.convert(str(empty), output_dir)
    (empty / 'loose.jpg').write_bytes(b'')
    with pytest.raises(photo_records.RecordsConversionError, match='no class subfolders'):
        photo_records.convert(str(empty), output_dir)
    (empty / 'cat').mkdir()
    (empty / 'cat' / 'readme.txt').write_text('x')
    with pytest.raises(photo_records.RecordsConversionError, match='cat has no images'):
        photo_records.convert(str(empty), output_dir)
    save(noise('RGB'), str(empty / 'cat' / 'a.png'))
    with pytest.raises(photo_records.RecordsConversionError, match='inside the input folder'):
        photo_records.convert(str(empty), str(empty / 'records'))
    with pytest.raises(photo_records.RecordsConversionError, match='validation_fraction'):
        photo_records.convert(str(empty), output_dir, validation_fraction=1.0)
    assert not os.path.exists(output_dir)


def test_command_line(image_tree, tmp_path):
    command = [
        sys.executable,
        os.path.join(REPO_ROOT, 'make_tfrecords.py'),
        '--input_dir',
        image_tree,
        '--output_dir',
        str(tmp_path / 'records'),
        '--train_shards=1',
        '--validation_shards=1',
    ]
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, cwd=str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert 'of 3 classes' in done.stdout and 'skipped 1 unreadable' in done.stdout
    assert 'broken.jpg' in done.stderr
    assert 'converted 15/15 images' in done.stderr  # progress, the unreadable file included
    assert 'class cat: 6 images' in done.stderr and 'class emu: 4 images' in done.stderr
    assert 'unbalanced' not in done.stderr
    again = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, cwd=str(tmp_path)
    )
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith('error: output folder')


def test_unbalanced_classes_are_named():
    assert photo_records.unbalanced_warning({'cat': 30, 'dog': 10}) is None
    warning = photo_records.unbalanced_warning({'cat': 31, 'dog': 10, 'emu': 12})
    assert warning.startswith('unbalanced classes: cat has 31 images, dog only 10 (more than 3x)')
