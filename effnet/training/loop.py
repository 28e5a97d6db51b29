"""The training loop: steps, progress lines, saves, validations and the stop on a signal."""
import contextlib
import math

import tensorflow.compat.v1 as tf
from absl import logging

from effnet.checkpoints import checkpoint_writer
from effnet.training.errors import TrainingError


def summary(writer, step, values):
    if writer is None:  # not rank 0
        return
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]),
                       step)


def train_loop(sess, graph, train_op, is_chief, progress, writer, model_dir, stop, log_every, save_every,
                validation=None, input_errors=contextlib.nullcontext):
    """Runs train_op until global_step reaches the total, logging every log_every steps and saving (on the
    chief) every save_every steps and at the end; returns the last step. `validation` (chief only) evaluates
    the checkpoints it asks for and may stop the run early. `input_errors` is the context the training step
    runs in (it explains input-pipeline failures; saving and validation run outside it).

    A SIGTERM/SIGINT recorded by `stop` (its `signum`) ends the loop after the running step, with a
    checkpoint, as checkpoint_writer.Interrupted."""
    total_steps = progress.total_steps
    step = saved_step = progress.mark_step
    if step >= total_steps:
        logging.info("TMP_MODEL_PATH already holds step %d >= %d total steps: nothing to train", step, total_steps)
    if validation is not None and validation.stop():
        return step
    while step < total_steps and stop.signum is None:
        with input_errors():
            _, loss, accuracy, learning_rate = sess.run([train_op, graph.loss, graph.accuracy,
                                                         graph.learning_rate])
        step = sess.run(graph.global_step)
        if not math.isfinite(loss):
            raise TrainingError("loss is %s at step %d: lower --learning_rate; %s (resuming starts there)"
                                % (loss, step, checkpoint_writer.last_good_text(model_dir)))
        progress.add(loss, accuracy)
        if step % log_every == 0 or step >= total_steps:
            logging.info(progress.line(step, learning_rate))
            summary(writer, step, {"loss": loss, "train_top1": progress.last_accuracy,
                                    "learning_rate": learning_rate})
        validate = validation is not None and validation.due(step, total_steps)
        if is_chief and (save_every > 0 and step % save_every == 0 or step >= total_steps or validate):
            prefix = graph.saver.save(sess)
            saved_step = step
        if validate:
            progress.pause(validation.run(sess, prefix, step))
            if validation.stop():
                break
    if stop.signum is not None:
        prefix = graph.saver.save(sess) if is_chief and step > saved_step else None
        raise checkpoint_writer.Interrupted(stop.signum, step, prefix)
    return step
