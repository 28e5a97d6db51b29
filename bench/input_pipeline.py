"""Input pipeline throughput: preprocess.build_dataset (training) vs plain full JPEG decoding.

    python bench/input_pipeline.py --image_size=224 --batch_size=64 --seconds=20

Writes the fixture photos --num_images times over into temporary TFRecord shards, then reads
the same files with the same parallelism (interleave + AUTOTUNE map) two ways and prints images/s
of each and their ratio. The training pipeline decodes only the crop window (fused
decode_and_crop_jpeg), so it can beat a full decode even though it also resizes.
"""

import glob
import os
import shutil
import sys
import tempfile
import time

import tensorflow.compat.v1 as tf
from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import preprocess  # noqa: E402  (after the sys.path line above)

FLAGS = flags.FLAGS
flags.DEFINE_integer('image_size', 224, 'Training image size.')
flags.DEFINE_integer('batch_size', 64, 'Images per batch.')
flags.DEFINE_integer('num_images', 2048, 'Images written into the temporary records.')
flags.DEFINE_integer('num_files', 8, 'Record shards to spread the images over.')
flags.DEFINE_float('seconds', 20.0, 'Measuring time per pipeline (after warm-up).')
flags.DEFINE_string(
    'photos_dir',
    os.path.join(os.path.dirname(REPO_ROOT), 'shared', 'fixtures', 'official_b0', 'photos'),
    'Folder of JPEG photos to repeat into the records.',
)


def write_records(photos, folder, num_images, num_files):
    """train-0000i-of-N shards holding the photos round-robin, num_images records in all."""
    encoded = []
    for path in photos:
        with open(path, 'rb') as f:
            encoded.append(f.read())
    writers = [
        tf.io.TFRecordWriter(os.path.join(folder, 'train-%05d-of-%05d' % (i, num_files))) for i in range(num_files)
    ]
    for index in range(num_images):
        features = tf.train.Features(
            feature={
                'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded[index % len(encoded)]])),
                'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
            }
        )
        writers[index % num_files].write(tf.train.Example(features=features).SerializeToString())
    for writer in writers:
        writer.close()


def plain_decode_dataset(data_path, batch_size):
    """Same reading as build_dataset, but each map call fully decodes the JPEG and nothing else."""
    files = preprocess.find_record_files(data_path, 'train')
    autotune = tf.data.experimental.AUTOTUNE

    def decode(record):
        image_bytes = tf.parse_single_example(record, {'image/encoded': tf.FixedLenFeature([], tf.string)})[
            'image/encoded'
        ]
        return tf.shape(tf.image.decode_jpeg(image_bytes, channels=3))

    dataset = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files))
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), preprocess.MAX_INTERLEAVE_FILES),
        num_parallel_calls=autotune,
    )
    dataset = dataset.shuffle(preprocess.SHUFFLE_BUFFER).repeat()
    dataset = dataset.map(decode, num_parallel_calls=autotune).batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_deterministic = False
    return dataset.with_options(options).prefetch(autotune)


def images_per_second(dataset, batch_size, seconds):
    """Runs a few warm-up batches, then counts batches for `seconds`.

    Batches are consumed inside the graph, as training does: fetching a 224x224 float batch into
    numpy would time a 38 MB copy per batch, not the pipeline.
    """
    with tf.Graph().as_default():
        next_batch = tf.group(tf.data.make_one_shot_iterator(dataset()).get_next())
        with tf.Session() as session:
            for _ in range(5):
                session.run(next_batch)
            batches = 0
            start = time.time()
            while time.time() - start < seconds:
                session.run(next_batch)
                batches += 1
            return batches * batch_size / (time.time() - start)


def main(argv):
    del argv
    photos = sorted(glob.glob(os.path.join(FLAGS.photos_dir, '*.jpg')))
    if not photos:
        print('error: no *.jpg in %s; pass --photos_dir' % FLAGS.photos_dir, file=sys.stderr)
        sys.exit(1)
    folder = tempfile.mkdtemp(prefix='bench_records_')
    try:
        write_records(photos, folder, FLAGS.num_images, FLAGS.num_files)
        train_rate = images_per_second(
            lambda: preprocess.build_dataset(folder, True, FLAGS.image_size, FLAGS.batch_size, label_offset=1),
            FLAGS.batch_size,
            FLAGS.seconds,
        )
        decode_rate = images_per_second(
            lambda: plain_decode_dataset(folder, FLAGS.batch_size), FLAGS.batch_size, FLAGS.seconds
        )
    finally:
        shutil.rmtree(folder)
    print(
        'cpu cores: %d, image_size %d, batch %d, %d photos (%s)'
        % (
            os.cpu_count(),
            FLAGS.image_size,
            FLAGS.batch_size,
            len(photos),
            ', '.join(os.path.basename(p) for p in photos),
        )
    )
    print('build_dataset training pipeline: %.1f images/s' % train_rate)
    print('plain full JPEG decode:          %.1f images/s' % decode_rate)
    print('ratio (pipeline / plain decode): %.2f' % (train_rate / decode_rate))


if __name__ == '__main__':
    app.run(main)
