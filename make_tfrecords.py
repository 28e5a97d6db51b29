"""Converts a folder of class subfolders of images into sharded TFRecords that preprocess.py reads.

    python make_tfrecords.py --input_dir=photos/ --output_dir=data/mine

input_dir/<class name>/<image files>; classes are the sorted folder names, label = class index
(label_offset 0, recorded in dataset_info.json). The records are written into a temporary folder
beside the output and moved in only when the conversion succeeded, so a failed run (or one where
a class, or a split that was asked for, ends up with no readable image: an error) leaves the
records already there untouched. Each class is split into train/validation with
the same seeded fraction. Every image is stored as an RGB JPEG: PNG, grayscale, palette, RGBA
(composited on white), CMYK and 16-bit images are converted with Pillow; RGB JPEGs are kept
byte for byte. EXIF orientation is not applied, matching what TensorFlow decodes at predict time.
Images whose shorter side is below --min_image_side are skipped with a warning listing them (see
the README: upsampling them would train on blurred blocks under the class's name). Ctrl-C stops
the workers at their next image and leaves the output folder as it was.
"""

from absl import flags

import preprocess
from effnet import cli
from effnet.data import photo_records

FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a script (tests import this module)."""
    flags.DEFINE_string('input_dir', None, 'Folder with one subfolder of images per class.')
    flags.DEFINE_string('output_dir', None, 'Folder to write the TFRecords, labels.txt and ' 'dataset_info.json into.')
    flags.DEFINE_float('validation_fraction', 0.1, 'Fraction of each class held out for validation.')
    flags.DEFINE_integer('train_shards', 16, 'Number of train-*-of-N record files.')
    flags.DEFINE_integer('validation_shards', 4, 'Number of validation-*-of-N record files.')
    flags.DEFINE_integer('num_workers', 4, 'Shards written in parallel (threads).')
    flags.DEFINE_integer('seed', 0, 'Seed of the train/validation split and of the train order.')
    flags.DEFINE_boolean('overwrite', False, 'Replace records already in --output_dir.')
    flags.DEFINE_integer('min_image_side', photo_records.DEFAULT_MIN_IMAGE_SIDE,
                         'Images whose shorter side has fewer pixels are skipped (listed in a warning); at least %d.'
                         % preprocess.MIN_IMAGE_SIDE)


def main(argv):
    del argv  # none: cli.run refuses positional arguments
    if not FLAGS.input_dir or not FLAGS.output_dir:
        cli.fail('pass --input_dir and --output_dir')
    try:
        summary = photo_records.convert(
            FLAGS.input_dir,
            FLAGS.output_dir,
            FLAGS.validation_fraction,
            FLAGS.train_shards,
            FLAGS.validation_shards,
            FLAGS.num_workers,
            FLAGS.seed,
            FLAGS.overwrite,
            min_image_side=FLAGS.min_image_side,
        )
    except (photo_records.RecordsConversionInterrupted, KeyboardInterrupt) as stopped:
        done = ' after %d of %d images' % (stopped.converted, stopped.total) if stopped.args else ''
        cli.interrupted('interrupted%s: nothing was written to %s (records already there are unchanged)'
                        % (done, FLAGS.output_dir))
    print(photo_records.describe(summary))
    if summary['skipped']:
        print('skipped %d unreadable files (see the warnings above)' % len(summary['skipped']))
    if summary['too_small']:
        print('skipped %d images smaller than %dx%d pixels: %s' % (
            len(summary['too_small']), summary['min_image_side'], summary['min_image_side'],
            ', '.join(summary['too_small'][:photo_records.MAX_LISTED_FILES])
            + (' ... (%d more, listed in the warning above)'
               % (len(summary['too_small']) - photo_records.MAX_LISTED_FILES)
               if len(summary['too_small']) > photo_records.MAX_LISTED_FILES else '')))


if __name__ == '__main__':
    cli.run(main, (ValueError, IOError), define_flags)
