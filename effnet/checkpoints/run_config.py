"""The settings a training run records beside its checkpoints (model, classes, image size, labels),
so test.py, predict.py and freeze_graph.py rebuild the same model without repeating flags."""
import json
import os
import shutil

import tensorflow.compat.v1 as tf

RUN_CONFIG_FILE = "run_config.json"
LABELS_FILE = "labels.txt"


def _folder(path):
    return path if os.path.isdir(path) else os.path.dirname(path)


def read(path):
    """The recorded settings for a checkpoint folder or prefix; {} when none were recorded."""
    if not path:
        return {}
    config_path = os.path.join(_folder(path), RUN_CONFIG_FILE)
    if not os.path.isfile(config_path):
        return {}
    try:
        with open(config_path) as handle:
            config = json.load(handle)
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def labels_file(path):
    """The class names of a checkpoint folder or prefix: the folder's own labels.txt (copied there by
    train.py, so a deployed folder carries it), else the recorded file while it exists, else None."""
    if not path:
        return None
    own = os.path.join(_folder(path), LABELS_FILE)
    if os.path.isfile(own):
        return own
    recorded = read(path).get("labels_file")
    return recorded if recorded and os.path.isfile(recorded) else None


def copy_labels(model_dir, source):
    """Copies the data's labels file into model_dir (atomically); returns the copy's path, or None."""
    if not source or not os.path.isfile(source):
        return None
    target = os.path.join(model_dir, LABELS_FILE)
    if os.path.abspath(source) != os.path.abspath(target):
        shutil.copyfile(source, target + ".tmp")
        os.replace(target + ".tmp", target)
    return target


def write(model_dir, **settings):
    """Writes the settings atomically, so a killed run never leaves half a file."""
    settings = {k: (os.path.abspath(v) if k.endswith(("_path", "_file")) and v else v) for k, v in settings.items()}
    temporary = os.path.join(model_dir, RUN_CONFIG_FILE + ".tmp")
    with tf.gfile.GFile(temporary, "w") as handle:
        handle.write(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    tf.gfile.Rename(temporary, os.path.join(model_dir, RUN_CONFIG_FILE), overwrite=True)
