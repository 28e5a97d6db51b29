"""Where a run starts: the checkpoint it resumes from (checked against what it builds), the leftovers of an
interrupted save, and the restore or the load of pretrained weights."""
import os

import tensorflow.compat.v1 as tf
from absl import logging

from effnet.checkpoints import checkpoint_reader, checkpoint_writer
from effnet.training.errors import TrainingError


def resume_checkpoint(model_dir):
    """The newest intact checkpoint in model_dir (whatever its `checkpoint` state file says), or None
    for an empty folder; a folder whose checkpoint files are all damaged is an error, because
    training from scratch there would overwrite them."""
    latest, damaged = checkpoint_reader.newest_intact_checkpoint(model_dir)
    if damaged:
        logging.warning("skipping damaged checkpoint(s): %s", checkpoint_reader.damaged_text(damaged))
    if latest is None and damaged:
        raise TrainingError("TMP_MODEL_PATH %s holds checkpoint files but no intact checkpoint: move them away "
                            "(or restore them from a copy), or pass an empty TMP_MODEL_PATH" % model_dir)
    return latest


def check_resume_fits(latest, model_dir, model_name, num_classes, classes_source):
    """The checkpoint a run resumes from must hold the model and class count it builds: said here, before
    building, with what to do (restoring a 10-wide head into 12 classes fails deep inside TensorFlow)."""
    held_model = checkpoint_reader.checkpoint_model_name(latest)
    fine_tune = ("pass a new TMP_MODEL_PATH, and --TMP_WEIGHTS_PATH=%s to fine-tune from this run's weights (the "
                 "head is trained anew)" % model_dir)
    if held_model and held_model != model_name:
        raise TrainingError("TMP_MODEL_PATH %s holds %s checkpoints (newest %s), not %s: drop --model_name to "
                            "resume that run, or %s" % (model_dir, held_model, os.path.basename(latest), model_name,
                                                        fine_tune))
    held_classes = checkpoint_reader.checkpoint_num_classes(latest, held_model)
    if held_classes and held_classes != num_classes:
        raise TrainingError("the class count differs from the checkpoint's: TMP_MODEL_PATH %s holds a %d-class "
                            "checkpoint (%s) but this run has %d classes (%s): to resume it, pass "
                            "--num_classes=%d and the data it was trained on; to train %d classes, %s"
                            % (model_dir, held_classes, os.path.basename(latest), num_classes, classes_source,
                               held_classes, num_classes, fine_tune))


def remove_partial_saves(folder, model_dir):
    """Removes what a save killed midway left in folder, and says so."""
    found = checkpoint_writer.remove_partial_files(os.path.join(folder, checkpoint_writer.CHECKPOINT_NAME),
                                                   any_step=True)
    if found:
        logging.warning("removed the partial files of an interrupted save: %s",
                        ", ".join(os.path.relpath(p, model_dir) for p in found))


def restore_or_initialize(sess, graph, latest, model_dir, weights_prefix, weights_variant):
    """Resumes from `latest`, else loads the pretrained weights (`weights_variant`: auto, ema or raw);
    returns a log line saying which."""
    sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
    if latest:
        try:
            graph.saver.restore(sess, latest)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as error:
            raise TrainingError("TMP_MODEL_PATH %s holds a checkpoint of another model or setup (%s); pass an "
                                "empty TMP_MODEL_PATH or the flags of that run"
                                % (model_dir, error.message.splitlines()[0]))
        return "resuming from %s (step %d); pretrained weights ignored" % (latest, sess.run(graph.global_step))
    if weights_prefix is None:
        return "training from scratch (no pretrained weights in TMP_WEIGHTS_PATH)"
    use_ema = checkpoint_reader.resolve_use_ema(weights_variant, weights_prefix)
    skipped = checkpoint_reader.restore(sess, weights_prefix, graph.model_variables, use_ema,
                                       skip_mismatched_head=True)
    if skipped:
        # The official head initialization, uniform(+-1/sqrt(classes)), is sized for 1000 classes: with 2 it
        # gives pretrained features logits in the tens and a first loss of 3-4 (measured on 2 classes: the loss
        # was still 2.1 after 10 epochs, validation 0.64 against 0.78 from zero). Zero starts at the uniform
        # prediction.
        sess.run(graph.zero_head)
    if graph.ema_sync is not None:
        sess.run(graph.ema_sync)
    message = "loaded pretrained %s weights from %s" % ("EMA" if use_ema else "raw", weights_prefix)
    if skipped:
        message += "; new head (shape differs, trained from zero): %s" % ", ".join(skipped)
    return message
