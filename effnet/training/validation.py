"""Validation during training: the checkpoints just saved evaluated as test.py evaluates them, the history,
best/ and early stopping."""
import errno
import os
import time

import tensorflow.compat.v1 as tf
from absl import logging

from effnet.checkpoints import checkpoint_reader, checkpoint_writer, run_config
from effnet.training import loop, training_policy
from effnet.training.errors import checked_folder


class Validation(object):
    """In-training validation of the checkpoints just saved (on the chief), through evaluation.Evaluator as
    test.py evaluates them: one log line, TensorBoard scalars in the `eval` run, the history in
    TMP_MODEL_PATH, the best checkpoint in TMP_MODEL_PATH/best/ and the early-stopping decision."""

    def __init__(self, evaluator, interval, patience, model_dir, log_dir, best_saver, settings, steps_per_epoch,
                 start_step):
        self.evaluator, self.interval, self.patience = evaluator, interval, patience
        self.model_dir, self.best_saver, self.settings = model_dir, best_saver, settings
        self.steps_per_epoch = steps_per_epoch
        self.best_dir = checked_folder(os.path.join(model_dir, training_policy.BEST_DIR), "TMP_MODEL_PATH/best")
        self.writer = tf.summary.FileWriter(os.path.join(log_dir, "eval"))
        self.history = training_policy.read_history(model_dir, start_step)
        self.kept_best = self._kept_best()
        self.seconds = 0.0
        self.last_top1 = None

    def _kept_best(self):
        """best/'s own record ({'step', 'top1'}) when the history lacks it (moved away, or of steps past the
        resumed one), so that only a better validation replaces best/; else None."""
        step = self._best_step()
        if step is None or any(entry["step"] == step for entry in self.history):
            return None
        top1 = run_config.read(self.best_dir).get("best_top1")
        return {"step": step, "top1": top1} if isinstance(top1, float) else None

    @staticmethod
    def _checkpoint_state(prefix):
        problem = checkpoint_reader.checkpoint_problem(prefix)
        return "%s is saved and intact" % prefix if problem is None else "%s is damaged (%s)" % (prefix, problem)

    def close(self):
        """Ends the evaluation session and the `eval` summary writer."""
        self.evaluator.close()
        self.writer.close()

    def due(self, step, total_steps):
        return training_policy.is_evaluation_step(step, self.interval, total_steps)

    def stop(self):
        """True when early stopping says so; logs why."""
        if not training_policy.should_stop_early(self.history, self.patience):
            return False
        best = training_policy.best_entry(self.history)
        logging.info("early stopping: %d validations without a better top-1 than %.4f (step %d, kept in %s)",
                     training_policy.evaluations_since_best(self.history), best["top1"], best["step"], self.best_dir)
        return True

    def _best_step(self):
        """The step best/ holds intact and records, or None."""
        prefix, _ = checkpoint_reader.newest_intact_checkpoint(self.best_dir)
        try:
            recorded = run_config.read(self.best_dir).get("best_step")
        except run_config.RunConfigError:
            return None
        step = checkpoint_reader.checkpoint_step(prefix) if prefix else None
        return step if step == recorded else None

    def _save_best(self, sess, step, top1):
        """Writes the session's weights (those of step `step`) into best/; a failure is one sentence."""
        try:
            self.best_saver.save(sess)
            run_config.write(self.best_dir, **dict(self.settings, best_step=int(step), best_top1=top1))
            run_config.copy_labels(self.best_dir, self.settings.get("labels_file"))
        except (checkpoint_writer.CheckpointSaveError, tf.errors.OpError, OSError) as error:
            # CheckpointSaver's error says "no good checkpoint in best/"; its cause says what went wrong.
            cause = (error.__context__ if isinstance(error, checkpoint_writer.CheckpointSaveError) else None) or error
            reason = getattr(cause, "message", None) or getattr(cause, "strerror", None) or str(cause)
            if "space left" in reason or getattr(cause, "errno", None) == errno.ENOSPC:
                reason = "no space left on device"
            return reason.splitlines()[0]
        return None

    def catch_up(self, sess, prefix, step, total_steps):
        """At resume: redoes the validation of checkpoint `prefix` (step `step`, just restored into sess) when
        a crash cut it short, or writes best/ again when the history's best is that step but best/ could not
        be written. Returns the seconds taken."""
        if self.due(step, total_steps) and all(entry.get("step") != step for entry in self.history):
            logging.info("the validation of step %d was cut short: redoing it", step)
            return self.run(sess, prefix, step)
        best = training_policy.best_entry(self.history)
        if best is not None and best.get("step") == step and self._best_step() != step:
            logging.info("best/ lacks the best validation (step %d, top1 %.4f): writing it now", step, best["top1"])
            failure = self._save_best(sess, step, best["top1"])
            if failure:
                raise checkpoint_writer.CheckpointSaveError("cannot write %s (%s): free space or fix the folder, then "
                                                        "run again" % (self.best_dir, failure))
        return 0.0

    def run(self, sess, prefix, step):
        """Evaluates checkpoint `prefix` (of step `step`, restored from disk as test.py would); saves a new
        best into best/. Returns the seconds taken."""
        start = time.time()
        result = self.evaluator.run(prefix, checkpoint_reader.resolve_use_ema("auto", prefix))
        entry = {"step": int(step), "epoch": round(step / self.steps_per_epoch, 3), "loss": result["loss"],
                 "top1": result["top1"], "top5": result["top5"]}
        best = training_policy.best_entry(self.history + ([self.kept_best] if self.kept_best else []))
        failure = None
        if best is None or entry["top1"] > best["top1"]:
            failure = self._save_best(sess, step, result["top1"])
            best = entry
        # Recorded even when best/ could not be written: the resumed run then writes best/ from this entry. A
        # run killed before this line redoes the validation at resume (catch_up).
        self.history.append(entry)
        try:
            training_policy.write_history(self.model_dir, self.history)
        except OSError as error:
            raise checkpoint_writer.CheckpointSaveError(
                "the validation of step %d (top1 %.4f) could not be recorded in %s (%s): %s; free space or fix "
                "the folder, then run the same command again: it resumes there and validates again"
                % (step, result["top1"], os.path.join(self.model_dir, training_policy.HISTORY_FILE),
                   error.strerror, self._checkpoint_state(prefix)))
        if failure:
            raise checkpoint_writer.CheckpointSaveError(
                "validation of step %d done (top1 %.4f, recorded in %s), but %s could not be written (%s): %s; "
                "free space or fix the folder, then run the same command again: it resumes there and writes best/"
                % (step, result["top1"], training_policy.HISTORY_FILE, self.best_dir, failure,
                   self._checkpoint_state(prefix)))
        loop.summary(self.writer, step, {"loss": result["loss"], "top1": result["top1"], "top5": result["top5"]})
        self.writer.flush()
        self.last_top1 = result["top1"]
        seconds = time.time() - start
        self.seconds += seconds
        logging.info("validation: step %d epoch %.2f loss %.4f top1 %.4f top5 %.4f images/s %.1f (%d images, %.1f s); "
                     "best top1 %.4f at step %d", step, entry["epoch"], result["loss"], result["top1"], result["top5"],
                     result["images_per_second"], result["count"], seconds, best["top1"], best["step"])
        return seconds
