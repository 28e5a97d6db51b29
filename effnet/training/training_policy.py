"""Training policy as plain functions of explicit arguments: the learning-rate schedule, the batch-norm
momentum of a run, when to validate, and the validation history behind the best checkpoint and early
stopping. train.py wires them to its flags; nothing here reads flags or touches a session."""
import json
import math
import os

import tensorflow.compat.v1 as tf

HISTORY_FILE = "validation_history.json"
BEST_DIR = "best"
# Validation splits up to this size are evaluated during training by default (make_tfrecords.py data);
# larger ones (ImageNet's 50,000) only when asked, because each pass costs minutes there.
AUTO_VALIDATION_MAX_IMAGES = 20000
AUTO_EVALUATIONS_PER_RUN = 5
OFFICIAL_BATCH_NORM_MOMENTUM = 0.99
# Moving statistics should forget their start within this fraction of a run (see batch_norm_momentum).
BATCH_NORM_MEMORY_FRACTION = 0.1
DEFAULT_LOG_INTERVAL = 100


def learning_rate(global_step, peak, schedule, steps_per_epoch, total_steps, warmup_epochs):
    """The learning-rate tensor: constant, exponential (x0.97 every 2.4 epochs) or cosine to zero at
    total_steps, after a linear warm-up of warmup_epochs."""
    step = tf.cast(global_step, tf.float32)
    if schedule == "exponential":
        decay_steps = max(1, int(2.4 * steps_per_epoch))
        rate = peak * tf.pow(0.97, tf.floor(step / decay_steps))
    elif schedule == "cosine":
        rate = 0.5 * peak * (1.0 + tf.cos(math.pi * tf.minimum(step / total_steps, 1.0)))
    else:
        rate = tf.constant(peak)
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    if warmup_steps > 0:
        rate = tf.where(step < warmup_steps, peak * step / warmup_steps, rate)
    return rate


def batch_norm_momentum(total_steps):
    """The moving-statistics momentum for a run of total_steps: the official 0.99 for runs of 1000 steps
    or more; shorter runs (fine-tuning) forget their starting statistics (ImageNet's, or the initial
    0/1) within BATCH_NORM_MEMORY_FRACTION of the run, so evaluation sees the statistics of the data the
    network was trained on. With 0.99, 60 steps leave 55% of ImageNet's statistics in place."""
    memory_steps = BATCH_NORM_MEMORY_FRACTION * total_steps
    return min(OFFICIAL_BATCH_NORM_MOMENTUM, max(0.5, 1.0 - 1.0 / max(memory_steps, 1.0)))


def log_interval(requested, total_steps):
    """Steps between progress lines: `requested` when given, else DEFAULT_LOG_INTERVAL, or a tenth of a
    shorter run (at least 1 step), so that a short fine-tuning run shows its loss, speed and time left
    along the way rather than once at the end."""
    if requested:
        return requested
    return max(1, min(DEFAULT_LOG_INTERVAL, total_steps // 10))


def evaluation_interval(every_n_epochs, every_n_steps, steps_per_epoch, total_steps, validation_images,
                        global_batch):
    """Steps between validations (0 = none). every_n_steps > 0 wins; every_n_epochs None = automatic for a
    validation split of up to AUTO_VALIDATION_MAX_IMAGES images (none for larger or missing ones): up to
    AUTO_EVALUATIONS_PER_RUN a run, at least as many images trained as validated in between (so none in runs
    that train fewer images than the split holds); 0 = off."""
    if not validation_images:
        return 0
    if every_n_steps > 0:
        return every_n_steps
    if every_n_epochs is None:
        if validation_images > AUTO_VALIDATION_MAX_IMAGES:
            return 0
        interval = max(int(math.ceil(total_steps / float(AUTO_EVALUATIONS_PER_RUN))),
                       int(math.ceil(validation_images / float(global_batch))))
        return interval if interval <= total_steps else 0  # a run shorter than one validation pass: none
    if every_n_epochs <= 0:
        return 0
    return max(1, int(round(every_n_epochs * steps_per_epoch)))


def is_evaluation_step(step, interval, total_steps):
    """Validate every `interval` steps and after the last one."""
    return interval > 0 and (step % interval == 0 or step >= total_steps)


class HistoryError(ValueError):
    """A validation history that exists but cannot be read: guessing it empty would let a worse validation
    replace best/."""


def read_history(model_dir, up_to_step):
    """The validations recorded in model_dir ([{'step', 'epoch', 'loss', 'top1', 'top5'}], oldest first),
    without those of steps past up_to_step (a run resumed from an earlier checkpoint redoes them); [] when
    there is none, HistoryError when it is damaged."""
    path = os.path.join(model_dir, HISTORY_FILE)
    if not os.path.exists(path):
        return []
    try:
        with open(path) as handle:
            history = json.load(handle)
    except (OSError, ValueError) as error:
        raise HistoryError("the validation history %s is damaged (%s): restore it from a copy, or move it away "
                           "(best/ is then replaced only by a better top-1 than it records)" % (path, error))
    if not isinstance(history, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("step"), int) and isinstance(entry.get("top1"), float)
            for entry in history):
        raise HistoryError("the validation history %s is damaged (expected a list of validations with a step and "
                           "a top1): restore it from a copy, or move it away (best/ is then replaced only by a "
                           "better top-1 than it records)" % path)
    return [entry for entry in history if entry["step"] <= up_to_step]


def write_history(model_dir, history):
    """Writes the history atomically, so a killed run leaves the previous one."""
    path = os.path.join(model_dir, HISTORY_FILE)
    with open(path + ".tmp", "w") as handle:
        json.dump(history, handle, indent=1)
    os.replace(path + ".tmp", path)


def best_entry(history):
    """The validation with the highest top-1 (the earliest of equals), or None."""
    best = None
    for entry in history:
        if best is None or entry["top1"] > best["top1"]:
            best = entry
    return best


def evaluations_since_best(history):
    """How many validations came after the best one without beating it."""
    best = best_entry(history)
    return 0 if best is None else len(history) - 1 - history.index(best)


def should_stop_early(history, patience):
    """True when the last `patience` validations did not improve on the best (patience 0 = never)."""
    return patience > 0 and evaluations_since_best(history) >= patience
