"""The settings a training run records beside its checkpoints (model, classes, image size, labels),
so test.py, predict.py and freeze_graph.py rebuild the same model without repeating flags."""
import json
import os
import shutil

import tensorflow.compat.v1 as tf

import efficientnet_builder

RUN_CONFIG_FILE = "run_config.json"
LABELS_FILE = "labels.txt"
_POSITIVE_INTEGERS = ("num_classes", "image_size")
_TEXTS = ("data_path", "labels_file")


class RunConfigError(ValueError):
    """A run record that exists but cannot be trusted; evaluating with guessed settings would report a wrong
    number, so the entry points stop and name the file."""


def _folder(path):
    return path if os.path.isdir(path) else os.path.dirname(path)


def read(path):
    """The recorded settings for a checkpoint folder or prefix; {} when none were recorded. A record that is
    not valid JSON, or holds values of the wrong kind, is a RunConfigError: falling back to defaults would
    rebuild another model (another image size) and report its accuracy as this one's."""
    if not path:
        return {}
    config_path = os.path.join(_folder(path), RUN_CONFIG_FILE)
    if not os.path.exists(config_path):
        return {}
    fix = "restore it from a copy, or move it away and pass --model_name, --num_classes and --image_size"
    try:
        with open(config_path) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as error:
        raise RunConfigError("the run record %s is damaged (%s): %s" % (config_path, error, fix))
    if not isinstance(config, dict):
        raise RunConfigError("the run record %s holds %s, not a JSON object: %s"
                             % (config_path, type(config).__name__, fix))
    problems = []
    if "model_name" in config and config["model_name"] not in efficientnet_builder.MODEL_NAMES:
        problems.append("model_name %r is not a known model" % (config["model_name"],))
    for key in _POSITIVE_INTEGERS:
        value = config.get(key)
        if key in config and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            problems.append("%s %r is not a positive whole number" % (key, value))
    for key in _TEXTS:
        if config.get(key) is not None and not isinstance(config[key], str):
            problems.append("%s %r is not a path" % (key, config[key]))
    if problems:
        raise RunConfigError("the run record %s is damaged: %s; %s" % (config_path, "; ".join(problems), fix))
    return config


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
