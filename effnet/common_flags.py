"""Flags that train.py and test.py share, defined once (the TMP_* names are the ones ModelZoo users know),
and the quieting of TensorFlow's log noise both tools share.

Flag style of the whole package: importing a module never defines a flag; every module with flags defines
them in its `define_flags()`, and only an entry point calls it (its own, which calls those of the library
modules whose flags it reads) through `effnet.cli.run`, so tests and tools import any modules together without
duplicate-flag clashes.
"""
from absl import flags

import efficientnet_builder
from effnet import cli


def define_flags():
    """Defines the shared flags (train.py and test.py call it through evaluation.define_flags)."""
    flags.DEFINE_string("TMP_DATA_PATH", "./data/demo",
                        "Folder with train-*/validation-* TFRecords (or train_tf/ and valid_tf/).")
    flags.DEFINE_string("TMP_MODEL_PATH", "./model",
                        "Folder for this run's checkpoints; test.py also takes a checkpoint prefix here.")
    flags.DEFINE_enum("model_name", None, efficientnet_builder.MODEL_NAMES,
                      "Model to build. Default: the one recorded in TMP_MODEL_PATH or held by the checkpoint, "
                      "else efficientnet-b0.")
    flags.DEFINE_integer("num_classes", 0, "Classifier width; 0 = from the dataset info (or the checkpoint head).")
    flags.DEFINE_integer("image_size", 0, "Input resolution; 0 = the one recorded in TMP_MODEL_PATH, "
                                          "else the model's own (224 for B0).")
    flags.DEFINE_integer("batch_size", 64, "Images per step on each device.", lower_bound=1)
    cli.define_weights_variant("Which weights of a checkpoint to read: of TMP_WEIGHTS_PATH when training starts "
                               "from pretrained weights, of TMP_MODEL_PATH when evaluating (test.py, "
                               "--nois_training).")


class FlagError(ValueError):
    """A flag value outside its range; the message names the flag and the range."""


def problems():
    """Sentences for the shared flags' values that cannot work (train.py adds its own)."""
    found = []
    for name in ("image_size", "num_classes"):
        if getattr(flags.FLAGS, name) < 0:
            found.append("--%s=%d must be positive (or 0 for the default)" % (name, getattr(flags.FLAGS, name)))
    return found


def check():
    """FlagError naming every shared flag out of range."""
    found = problems()
    if found:
        raise FlagError("; ".join(found))


def quiet_tensorflow():
    """TensorFlow 1.15 prints dozens of deprecation notices about its own internals per run, each twice, and
    every INFO line twice (its own handler and absl's): the logs keep one copy of each line and no
    deprecation notices; other warnings stay."""
    import logging

    from tensorflow.python.util import deprecation

    deprecation._PRINT_DEPRECATION_WARNINGS = False
    tf_logger = logging.getLogger("tensorflow")
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)


quiet_tensorflow()
