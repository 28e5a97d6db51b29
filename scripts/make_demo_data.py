"""Builds the small demo dataset data/demo from scikit-learn's handwritten digits.

    pip install 'scikit-learn<1.1' && python scripts/make_demo_data.py --overwrite

The 1,797 8x8 digits (values 0..16) become 32x32 RGB PNGs in class folders 0..9, which
make_tfrecords.py converts (20% per class for validation, 2 train shards, 1 validation shard).
Everything is in a fixed order with a fixed seed, so reruns give byte-identical record files.
Only generation needs scikit-learn; the records are committed.
"""

import os
import shutil
import sys
import tempfile

import numpy as np
from absl import flags
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from effnet import cli  # noqa: E402  (after the sys.path line above)
from effnet.data import photo_records  # noqa: E402

IMAGE_SIZE = 32
VALIDATION_FRACTION = 0.2
SEED = 0
SOURCE = 'scikit-learn load_digits, 8x8 scaled to 32x32 RGB (scripts/make_demo_data.py)'


def load_digits():
    """(images uint8 [N,8,8] in 0..255, labels [N]); exits with the install hint without sklearn."""
    try:
        from sklearn import datasets  # pylint: disable=g-import-not-at-top
    except ImportError:
        cli.fail("scikit-learn is needed to generate the demo data: pip install 'scikit-learn<1.1'")
    digits = datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target


def write_pngs(images, labels, folder):
    """Writes each digit as <folder>/<label>/<index>.png, 32x32 RGB (bilinear upscaling)."""
    for index, (image, label) in enumerate(zip(images, labels)):
        class_dir = os.path.join(folder, str(label))
        os.makedirs(class_dir, exist_ok=True)
        big = Image.fromarray(image, 'L').resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        big.convert('RGB').save(os.path.join(class_dir, '%04d.png' % index))


def make_demo_data(output_dir, overwrite=False):
    """Generates the demo records into output_dir; returns photo_records.convert's summary."""
    images, labels = load_digits()
    work_dir = tempfile.mkdtemp(prefix='digits_png_')
    try:
        write_pngs(images, labels, work_dir)
        return photo_records.convert(
            work_dir,
            output_dir,
            validation_fraction=VALIDATION_FRACTION,
            train_shards=2,
            validation_shards=1,
            num_workers=2,
            seed=SEED,
            overwrite=overwrite,
            source=SOURCE,
        )
    finally:
        shutil.rmtree(work_dir)


FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a script, so importing make_demo_data() adds no global flags."""
    flags.DEFINE_string('output_dir', os.path.join(REPO_ROOT, 'data', 'demo'), 'Where to write the demo records.')
    flags.DEFINE_boolean('overwrite', False, 'Replace records already in --output_dir.')


def main(argv):
    del argv  # none: cli.run refuses positional arguments
    summary = make_demo_data(FLAGS.output_dir, FLAGS.overwrite)
    print('demo data: ' + photo_records.describe(summary))


if __name__ == '__main__':
    cli.run(main, (ValueError, IOError), define_flags)
