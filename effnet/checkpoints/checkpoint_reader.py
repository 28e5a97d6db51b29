"""Checkpoint helpers shared by train.py, test.py, freeze_graph.py and predict.py.

Every entry point finds a checkpoint the same way, restores either the raw weights or their
exponential-moving-average (EMA) shadows, and fails with one clear message when the checkpoint
does not fit the model being built (another model, another class count, no EMA shadows).
"""
import collections
import glob
import os
import re

import numpy as np
import tensorflow.compat.v1 as tf
from absl import logging

import efficientnet_builder
from effnet.checkpoints import run_config

EMA_SUFFIX = "/ExponentialMovingAverage"
HEAD_SCOPE = "/head/dense/"
# Which weights of a checkpoint to read (--weights_variant): the EMA shadows, the raw variables, or auto = the
# shadows when the checkpoint has them.
WEIGHTS_VARIANTS = ("auto", "ema", "raw")
# The deprecated --use_ema vocabulary, still taken: true = ema, false = raw.
_USE_EMA_VARIANTS = {"true": "ema", "false": "raw"}
_MAX_LISTED = 10
_DATA_SHARD = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
_STEP = re.compile(r"-(\d+)$")
# The last 8 bytes of every TensorFlow checkpoint index (a LevelDB-style table: its footer's magic number).
_INDEX_MAGIC = bytes.fromhex("57fb808b247547db")


class CheckpointError(ValueError):
    """A checkpoint is missing or does not fit the model being built."""


class CheckpointRemoved(CheckpointError):
    """A checkpoint found moments ago is gone (a running training's retention deletes older checkpoints)."""


def _holds_checkpoint(folder):
    return bool(checkpoint_prefixes(folder))


def _is_checkpoint_index(path):
    """True when the file ends as a checkpoint index does (so a stray notes.index is not a checkpoint)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() < len(_INDEX_MAGIC):
                return False
            handle.seek(-len(_INDEX_MAGIC), os.SEEK_END)
            return handle.read() == _INDEX_MAGIC
    except OSError:
        return False


def _files_gone(prefix):
    return not (os.path.isfile(prefix + ".index") and glob.glob(glob.escape(prefix) + ".data-*"))


def removed_text(prefix):
    """The sentence for a checkpoint that vanished while it was read, naming what to do."""
    folder = os.path.dirname(prefix) or "."
    newest, _ = newest_intact_checkpoint(folder)
    return ("checkpoint %s was removed while it was being read (a training run writing into %s deletes older "
            "checkpoints as it saves new ones, see --keep_checkpoint_max): %s" % (
                prefix, folder, "pass the folder again to use the newest one, %s, or evaluate a copy of the folder"
                % os.path.basename(newest) if newest else "evaluate a copy of the folder"))


def checkpoint_folder(folder):
    """The folder holding the checkpoints: `folder` itself, or its one sub-folder that does (as Google's
    archives unpack: weights/efficientnet-b0/model.ckpt.*); None when there is none."""
    if _holds_checkpoint(folder):
        return folder
    nested = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                    if os.path.isdir(os.path.join(folder, name)) and _holds_checkpoint(os.path.join(folder, name)))
    if len(nested) > 1:
        raise CheckpointError("folder %s holds several checkpoint folders (%s): pass one of them"
                              % (folder, ", ".join(nested)))
    return nested[0] if nested else None


def checkpoint_problem(prefix):
    """Why the checkpoint at `prefix` cannot be restored (missing or cut-short files), or None when it
    is intact. Cheap: reads the index only and compares the data files' sizes with what it lists."""
    name = os.path.basename(prefix)
    if not os.path.isfile(prefix + ".index"):
        return "%s.index is missing" % name
    data_files = [p for p in glob.glob(glob.escape(prefix) + ".data-*") if _DATA_SHARD.search(p)]
    if not data_files:
        return "%s.data-* is missing" % name
    num_shards = int(_DATA_SHARD.search(data_files[0]).group(2))
    missing = ["%s.data-%05d-of-%05d" % (name, i, num_shards) for i in range(num_shards)
               if not os.path.isfile("%s.data-%05d-of-%05d" % (prefix, i, num_shards))]
    if missing:
        return "%s is missing" % ", ".join(missing)
    try:
        reader = tf.train.NewCheckpointReader(prefix)
    except (tf.errors.OpError, ValueError) as err:
        if not os.path.isfile(prefix + ".index"):
            return "%s.index is missing" % name
        return "%s.index is damaged (%s)" % (name, str(err).splitlines()[0])
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    if any(dtype == tf.string for dtype in dtypes.values()):
        return None  # string tensors have no fixed size to compare with
    expected = sum(int(np.prod(shapes[key], dtype=np.int64)) * dtypes[key].size for key in shapes)
    try:
        actual = sum(os.path.getsize(p) for p in data_files)
    except OSError:  # removed since the glob above (retention of a running training)
        return "%s.data-* is missing" % name
    if actual < expected:
        return "its data is cut short (%d of %d bytes)" % (actual, expected)
    return None


def checkpoint_prefixes(folder):
    """Every checkpoint prefix in `folder` (by its .data files or an .index file that is one, so damaged ones
    count too, other *.index files do not), newest first: by the global step in the name, then by
    modification time."""
    prefixes = set()
    indexes = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*")):
        if path.endswith(".index"):
            indexes.append(path)
        elif _DATA_SHARD.search(path):
            prefixes.add(_DATA_SHARD.sub("", path))
    prefixes.update(path[:-len(".index")] for path in indexes
                    if path[:-len(".index")] in prefixes or _is_checkpoint_index(path))
    return sorted(prefixes, key=_prefix_order, reverse=True)


def newest_intact_checkpoint(folder):
    """(newest intact prefix or None, [(prefix, problem)] of the damaged ones newer than it).

    The `checkpoint` state file is not read: it holds absolute paths that point into another
    folder once a model folder is copied or moved, and may itself be damaged."""
    damaged = []
    for prefix in checkpoint_prefixes(folder):
        problem = checkpoint_problem(prefix)
        if problem is None:
            return prefix, damaged
        if glob.glob(glob.escape(prefix) + ".*"):  # else removed meanwhile (retention): gone, not damaged
            damaged.append((prefix, problem))
    return None, damaged


def damaged_text(damaged):
    """'name (problem); ...' for newest_intact_checkpoint's damaged list."""
    return "; ".join("%s (%s)" % (os.path.basename(prefix), problem) for prefix, problem in damaged)


def resolve_checkpoint(path):
    """Returns the checkpoint prefix for a folder (its newest intact checkpoint) or a prefix.

    A folder is searched for its own checkpoint files, whatever its `checkpoint` state file says,
    so copied and moved model folders stay self-contained; damaged checkpoints are skipped with a
    warning. A folder with no checkpoint of its own may hold one sub-folder that has them. A
    damaged prefix is an error naming the newest intact checkpoint beside it.
    """
    if not path:
        raise CheckpointError("no checkpoint given: pass --checkpoint=<folder or checkpoint prefix>")
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        path = checkpoint_folder(path) or path
        prefix, damaged = newest_intact_checkpoint(path)
        if prefix is None and damaged:
            raise CheckpointError("no intact checkpoint in folder %s: %s; restore the files from a copy or "
                                  "train again into an empty folder" % (path, damaged_text(damaged)))
        if prefix is None:
            raise CheckpointError(
                "no checkpoint in folder %s: expected <prefix>.index and <prefix>.data-* files there; "
                "pass the training model_dir or a checkpoint prefix" % path)
        if damaged:
            logging.warning("skipping damaged checkpoint(s) in %s: %s; using %s", path, damaged_text(damaged),
                            os.path.basename(prefix))
        return prefix
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
    path = _DATA_SHARD.sub("", path)
    if not (os.path.exists(path + ".index") or glob.glob(glob.escape(path) + ".data-*")):
        raise CheckpointError(
            "checkpoint not found: %s is neither a folder holding checkpoints nor a checkpoint prefix "
            "with a %s.index file (expected e.g. model_dir or model_dir/model.ckpt-1000)"
            % (path, os.path.basename(path)))
    problem = checkpoint_problem(path)
    if problem:
        folder = os.path.dirname(path) or "."
        intact, _ = newest_intact_checkpoint(folder)
        raise CheckpointError("checkpoint %s is damaged: %s; %s" % (
            path, problem, "the newest intact checkpoint beside it is %s: pass that" % intact if intact
            else "there is no intact checkpoint in %s: restore the files from a copy" % folder))
    return path


def checkpoint_step(prefix):
    """The global step in a checkpoint's name (model.ckpt-1000 -> 1000), or None."""
    match = _STEP.search(prefix)
    return int(match.group(1)) if match else None


def _prefix_order(prefix):
    """Sort key for checkpoint prefixes: global step from the name, then modification time."""
    step = checkpoint_step(prefix)
    times = []
    for path in glob.glob(glob.escape(prefix) + ".*"):
        try:
            times.append(os.path.getmtime(path))
        except OSError:  # removed meanwhile
            pass
    return (-1 if step is None else step, max(times) if times else 0.0)


def checkpoint_shapes(prefix):
    """Returns {key: shape list} for every variable stored in the checkpoint."""
    try:
        return dict(tf.train.list_variables(prefix))
    except (tf.errors.OpError, ValueError) as err:
        if _files_gone(prefix):
            raise CheckpointRemoved(removed_text(prefix))
        raise CheckpointError("cannot read checkpoint %s (%s): pass an intact checkpoint"
                              % (prefix, str(err).splitlines()[0]))


def has_ema(prefix):
    """True when the checkpoint holds `.../ExponentialMovingAverage` shadow variables."""
    return any(key.endswith(EMA_SUFFIX) for key in checkpoint_shapes(prefix))


def checkpoint_model_name(prefix):
    """Returns the top scope of the checkpoint's `efficientnet-*` keys (the model it holds), or None."""
    scopes = collections.Counter(key.split("/", 1)[0] for key in checkpoint_shapes(prefix)
                                 if key.startswith("efficientnet-") and "/" in key)
    return scopes.most_common(1)[0][0] if scopes else None


def checkpoint_num_classes(prefix, model_name=None):
    """Returns the class count of the checkpoint's classification head (head/dense/bias), or None."""
    model_name = model_name or checkpoint_model_name(prefix)
    shape = checkpoint_shapes(prefix).get("%s/head/dense/bias" % model_name)
    return int(shape[0]) if shape else None


def infer_model(prefix, model_name=None, num_classes=None, image_size=None):
    """Fills model_name / num_classes / image_size left unset: from the run that wrote the checkpoint
    (run_config.json), the checkpoint's own variables, then the model's resolution."""
    recorded = run_config.read(prefix)
    if model_name:
        efficientnet_builder.model_spec(model_name)
    held = checkpoint_model_name(prefix)
    if not (model_name or held):
        raise CheckpointError(
            "cannot tell which model checkpoint %s holds (no efficientnet-* variables): pass --model_name"
            % prefix)
    if model_name and held and model_name != held:
        raise CheckpointError(
            "checkpoint %s seems to hold %s, not --model_name=%s: drop --model_name or pass an %s checkpoint"
            % (prefix, held, model_name, model_name))
    model_name = model_name or held
    spec = efficientnet_builder.model_spec(model_name)
    if not num_classes:
        num_classes = checkpoint_num_classes(prefix, model_name)
        if not num_classes:
            raise CheckpointError(
                "checkpoint %s has no %s/head/dense/bias to read the class count from: pass --num_classes"
                % (prefix, model_name))
    return model_name, num_classes, image_size or recorded.get("image_size") or spec.resolution


def resolve_use_ema(variant, prefix):
    """Whether to read the EMA shadows, for a weights variant (auto|ema|raw; the deprecated true|false) or a
    bool: auto = the checkpoint has EMA shadows."""
    if isinstance(variant, bool):
        return variant
    choice = str(variant).lower()
    choice = _USE_EMA_VARIANTS.get(choice, choice)
    if choice not in WEIGHTS_VARIANTS:
        raise CheckpointError("--weights_variant must be one of %s, got %r" % ("|".join(WEIGHTS_VARIANTS), variant))
    if choice == "auto":
        return has_ema(prefix)
    return choice == "ema"


def listed(names, limit=_MAX_LISTED):
    """Formats at most `limit` names plus a count of the rest, for one-line messages."""
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += " ... (%d more)" % (len(names) - limit)
    return shown


def model_variables_restore_map(prefix, model_vars, use_ema, skip_mismatched_head=False):
    """Maps checkpoint keys to model variables for a tf.train.Saver.

    With use_ema every variable is restored from its `<name>/ExponentialMovingAverage` shadow
    (BN moving statistics included, as the official evaluation does), else from `<name>`.
    skip_mismatched_head leaves out head/dense variables whose shape differs (fine-tuning to a
    new class count). Returns (var_list {ckpt_key: variable}, skipped variable names).
    """
    shapes = checkpoint_shapes(prefix)
    var_list, skipped, missing, mismatched = {}, [], [], []
    for var in model_vars:
        name = var.op.name
        key = name + EMA_SUFFIX if use_ema else name
        model_shape = var.shape.as_list()
        if key not in shapes:
            missing.append(key)
        elif shapes[key] != model_shape:
            if skip_mismatched_head and HEAD_SCOPE in "/" + name:
                skipped.append(name)
            else:
                mismatched.append("%s (checkpoint %s, model %s)" % (key, shapes[key], model_shape))
        else:
            var_list[key] = var
    if missing:
        _raise_missing(prefix, shapes, model_vars, missing, use_ema)
    if mismatched:
        raise CheckpointError(
            "checkpoint %s does not fit the model: %d shape mismatches: %s; pass the checkpoint's "
            "--model_name/--num_classes, or fine-tune with the head skipped"
            % (prefix, len(mismatched), listed(mismatched)))
    return var_list, skipped


def _raise_missing(prefix, shapes, model_vars, missing, use_ema):
    """Explains missing keys: another model, no EMA shadows, or plain missing names."""
    model_scopes = sorted({v.op.name.split("/", 1)[0] for v in model_vars})
    held = checkpoint_model_name(prefix)
    if held and held not in model_scopes:
        raise CheckpointError(
            "checkpoint %s seems to hold %s, but the model being built is %s: pass --model_name=%s "
            "or an %s checkpoint" % (prefix, held, ", ".join(model_scopes), held, ", ".join(model_scopes)))
    if held is None:
        raise CheckpointError(
            "checkpoint %s holds no efficientnet-* variables (%d keys, e.g. %s): pass an EfficientNet "
            "checkpoint" % (prefix, len(shapes), listed(sorted(shapes)[:3])))
    if use_ema and not any(key.endswith(EMA_SUFFIX) for key in shapes):
        raise CheckpointError(
            "checkpoint %s has no ExponentialMovingAverage shadow variables: restore the raw weights "
            "(--weights_variant=raw)" % prefix)
    raise CheckpointError(
        "checkpoint %s lacks %d keys the model needs%s: %s; pass a checkpoint of the same model and "
        "options" % (prefix, len(missing), " (EMA shadows)" if use_ema else "", listed(missing)))


def restore(sess, prefix, model_vars, use_ema, skip_mismatched_head=False):
    """Restores model_vars from the checkpoint prefix into sess; returns the skipped variable names."""
    var_list, skipped = model_variables_restore_map(prefix, model_vars, use_ema, skip_mismatched_head)
    restore_or_explain(tf.train.Saver(var_list=var_list), sess, prefix)
    return skipped


def restore_or_explain(saver, sess, prefix):
    """saver.restore, with a damaged data file (bad checksum, cut short) as one CheckpointError, and a
    checkpoint removed since it was found as CheckpointRemoved."""
    try:
        saver.restore(sess, prefix)
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.NotFoundError, ValueError) as err:
        if _files_gone(prefix):
            raise CheckpointRemoved(removed_text(prefix))
        if not isinstance(err, (tf.errors.DataLossError, tf.errors.OutOfRangeError)):
            raise
        other = next((p for p in checkpoint_prefixes(os.path.dirname(prefix) or ".")
                      if p != prefix and checkpoint_problem(p) is None), None)
        raise CheckpointError("checkpoint %s is damaged (%s); %s" % (
            prefix, err.message.splitlines()[0],
            "move it away to use the newest other intact checkpoint, %s" % other if other
            else "restore it from a copy"))
