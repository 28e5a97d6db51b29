"""How a training run keeps its checkpoints safe: the model-folder lock, the checked saver with
retention, and saving on SIGTERM/SIGINT. Plain classes a training loop composes (train.py does).

Guarantees (README, Reliability):
- only one run writes a model folder at a time (a lock file naming the holder; a dead holder's lock
  is taken over);
- a checkpoint is written only when every model weight is finite and below MAX_ABS_WEIGHT, it is
  named by the global step it holds, and the folder's `checkpoint` state file uses relative paths;
- retention counts the `model.ckpt-<step>` checkpoints in the folder (earlier runs' too) and runs after
  every save and when a run starts, so the folder holds at most keep_checkpoint_max of them up to its
  newest intact one; keep_checkpoint_max + 1 only when a run was killed (SIGKILL, power loss) between
  a save and its retention, until the next run starts. The newest intact checkpoint is never deleted;
  damaged newer ones (a save cut short) are left until training writes their step again;
- a failed write (disk full, read-only) removes its partial files and is one CheckpointSaveError.
"""
import errno
import glob
import json
import os
import shutil
import signal
import socket
import time

import numpy as np
import tensorflow.compat.v1 as tf

from effnet.checkpoints import checkpoint_reader

CHECKPOINT_NAME = "model.ckpt"
STATE_FILE = "checkpoint"
LOCK_FILE = "train.lock"
# Weights of a healthy EfficientNet stay far below this (|w| < 1e3 after long ImageNet runs, BN moving
# variances included); a diverging run passes it long before its loss turns inf/nan.
MAX_ABS_WEIGHT = 1e6


class CheckpointSaveError(ValueError):
    """A checkpoint that must not or could not be written; the message names the last good one."""


class LockError(ValueError):
    """The model folder is in use by another run, or cannot be written."""


class Interrupted(Exception):
    """Training stopped by a signal after saving; exit with 128 + signum."""

    def __init__(self, signum, step, prefix):
        super(Interrupted, self).__init__(signum, step, prefix)
        self.signum, self.step, self.prefix = signum, step, prefix

    @property
    def exit_code(self):
        return 128 + self.signum

    def __str__(self):
        where = ("saved step %d as %s" % (self.step, self.prefix) if self.prefix
                 else "nothing new to save (step %d is on disk)" % self.step)
        return "interrupted by %s: %s; run the same command again to resume" % (
            signal.Signals(self.signum).name, where)


def last_good_text(model_dir):
    """'the last good checkpoint is X (step N)' for messages, or a sentence saying there is none."""
    prefix, _ = checkpoint_reader.newest_intact_checkpoint(model_dir)
    if prefix is None:
        return "there is no good checkpoint in %s" % model_dir
    return "the last good checkpoint is %s" % prefix


def _step_of(prefix):
    """The step of one of our own `model.ckpt-<step>` checkpoints, else None (other names are left alone)."""
    if not os.path.basename(prefix).startswith(CHECKPOINT_NAME + "-"):
        return None
    return checkpoint_reader.checkpoint_step(prefix)


def _remove_checkpoint(prefix):
    for path in glob.glob(glob.escape(prefix) + ".*"):
        os.remove(path)


def remove_partial_files(prefix, any_step=False):
    """Removes what a failed or killed save leaves: <prefix>.data-*.tempstate* files and <prefix>_temp*
    folders, which TensorFlow never reads nor cleans up; with any_step, those of every <prefix>-<step> (the
    leftovers of any earlier run in the folder). Returns the paths removed."""
    base = glob.escape(prefix) + ("-*" if any_step else "")
    found = sorted(glob.glob(base + "*tempstate*") + glob.glob(base + "_temp*"))
    for path in found:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    return found


def write_state_file(model_dir, prefixes):
    """The `checkpoint` state file listing `prefixes` (oldest first) by relative names, written atomically,
    so TensorFlow's own tools find them in a copied or moved folder."""
    names = [os.path.basename(p) for p in prefixes]
    lines = ['model_checkpoint_path: "%s"' % names[-1]] + ['all_model_checkpoint_paths: "%s"' % n for n in names]
    temporary = os.path.join(model_dir, STATE_FILE + ".tmp")
    with open(temporary, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(temporary, os.path.join(model_dir, STATE_FILE))


def _magnitude(variable):
    """max |w|, in the units of the activations: a batch-norm moving variance holds squared activations
    (a healthy 3e3 becomes 9e6), so its square root is what is compared with MAX_ABS_WEIGHT."""
    magnitude = tf.reduce_max(tf.abs(tf.cast(variable, tf.float32)))
    return tf.sqrt(magnitude) if "moving_variance" in variable.op.name else magnitude


class CheckpointSaver(object):
    """Saves `model.ckpt-<global step>` into model_dir after checking the weights, then applies retention.

    Build it while the graph is still open (it adds the weight-check ops); `checked_variables` are
    the model weights (EMA shadows included) whose values decide whether a checkpoint is good.
    """

    def __init__(self, model_dir, keep_checkpoint_max, global_step, checked_variables, var_list=None):
        self.model_dir = model_dir
        self.keep_checkpoint_max = keep_checkpoint_max
        self.global_step = global_step
        self.saver = tf.train.Saver(var_list=var_list, max_to_keep=None, save_relative_paths=True)
        checked = [v for v in checked_variables if v.dtype.base_dtype.is_floating]
        self._checked_names = [v.op.name for v in checked]
        with tf.name_scope("checkpoint_check"):
            # One value per variable: its magnitude, or inf when any entry is not finite (NaN does not survive
            # reduce_max).
            self._max_abs = tf.stack([
                tf.where(tf.reduce_all(tf.is_finite(v)), _magnitude(v), tf.constant(np.inf, tf.float32))
                for v in checked]) if checked else None

    def restore(self, sess, prefix):
        checkpoint_reader.restore_or_explain(self.saver, sess, prefix)

    def unhealthy(self, sess):
        """A sentence naming the worst weight when the weights are not fit to save, else None."""
        if self._max_abs is None:
            return None
        values = sess.run(self._max_abs)
        worst = int(np.argmax(values))
        if np.isfinite(values[worst]) and values[worst] <= MAX_ABS_WEIGHT:
            return None
        if not np.isfinite(values[worst]):
            return "weight %s holds inf or nan" % self._checked_names[worst]
        name = self._checked_names[worst]
        return "weight %s reached %s = %.3g (limit %g): training diverged" % (
            name, "sqrt|w|" if "moving_variance" in name else "|w|", values[worst], MAX_ABS_WEIGHT)

    def save(self, sess):
        """Writes the checkpoint of the current global step; returns its prefix."""
        step = int(sess.run(self.global_step))
        problem = self.unhealthy(sess)
        if problem:
            raise CheckpointSaveError("step %d not saved: %s; %s; lower --learning_rate and run again to resume "
                                      "from it" % (step, problem, last_good_text(self.model_dir)))
        prefix = os.path.join(self.model_dir, "%s-%d" % (CHECKPOINT_NAME, step))
        try:
            self.saver.save(sess, os.path.join(self.model_dir, CHECKPOINT_NAME), global_step=step,
                            write_state=False, write_meta_graph=False)
        except (tf.errors.OpError, OSError) as err:
            remove_partial_files(prefix)
            reason = err.message if isinstance(err, tf.errors.OpError) else str(err)
            if isinstance(err, OSError) and err.errno == errno.ENOSPC or "space left" in reason:
                reason = "no space left on device"
            raise CheckpointSaveError("cannot write checkpoint step %d to %s (%s): free space or fix the folder, "
                                      "then run again; %s" % (step, self.model_dir, reason.splitlines()[0],
                                                              last_good_text(self.model_dir)))
        apply_retention(self.model_dir, self.keep_checkpoint_max, prefix)
        return prefix


def apply_retention(model_dir, keep_checkpoint_max, newest):
    """Keeps `newest` (the checkpoint just saved, or the one a run resumes from) and the
    keep_checkpoint_max - 1 `model.ckpt-<step>` checkpoints before it, counted on disk so that earlier
    runs' count too, and rewrites the state file. Run after each save and when a run starts, so that
    a run killed between a save and this leaves one checkpoint too many only until the next start.
    Newer ones (left by a run that went further and skipped as damaged) are replaced when training
    reaches them; checkpoints of other names are left alone."""
    newest_step = _step_of(newest)
    if newest_step is None:
        return
    # checkpoint_prefixes lists them newest first; `newest` itself is kept whatever shares its step.
    older = [p for p in checkpoint_reader.checkpoint_prefixes(model_dir)
             if os.path.basename(p) != os.path.basename(newest) and _step_of(p) is not None
             and _step_of(p) <= newest_step]
    kept = older[:keep_checkpoint_max - 1] if keep_checkpoint_max > 0 else older
    for prefix in older[len(kept):]:
        _remove_checkpoint(prefix)
    write_state_file(model_dir, list(reversed(kept)) + [newest])


def _process_start_time(pid):
    """The kernel's start time of process pid (Linux), to tell a reused pid from the lock's holder."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid, start_time):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start_time is None or _process_start_time(pid) in (None, start_time)


class ModelFolderLock(object):
    """A lock file in the model folder holding the pid and host of the run that writes it.

    A lock left by a process that no longer runs on this host is taken over; one from another
    host cannot be checked and is reported with the command to remove it.
    """

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.held = False

    def _holder(self):
        try:
            with open(self.path) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def acquire(self):
        pid = os.getpid()
        record = {"pid": pid, "host": socket.gethostname(), "start_time": _process_start_time(pid),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") not in (None, socket.gethostname()):
                    raise LockError("TMP_MODEL_PATH %s is in use by process %s on host %s (since %s): wait for it "
                                    "to finish or pass another TMP_MODEL_PATH; if that run is gone, delete %s"
                                    % (os.path.dirname(self.path), holder.get("pid"), holder["host"],
                                       holder.get("since"), self.path))
                if isinstance(holder.get("pid"), int) and _alive(holder["pid"], holder.get("start_time")):
                    raise LockError("TMP_MODEL_PATH %s is in use by another training run (pid %d, since %s): wait "
                                    "for it to finish or pass another TMP_MODEL_PATH"
                                    % (os.path.dirname(self.path), holder["pid"], holder.get("since")))
                try:  # the holder is gone (killed, crashed, or the lock is half written): take it over
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            except OSError as err:
                raise LockError("cannot write into TMP_MODEL_PATH %s (%s): pass a folder you can write to"
                                % (os.path.dirname(self.path), err.strerror))
            with os.fdopen(handle, "w") as out:
                json.dump(record, out)
            self.held = True
            return self
        raise LockError("cannot take the lock %s: several runs are starting in the same TMP_MODEL_PATH"
                        % self.path)

    def release(self):
        if self.held and self._holder().get("pid") == os.getpid():
            os.remove(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class StopSignals(object):
    """While active, SIGTERM and SIGINT only record a stop request, which the training loop checks after
    each step (so it saves first); the same signal a second time stops at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        del frame
        if self.signum == signum:
            raise KeyboardInterrupt
        self.signum = signum
        os.write(2, ("%s received: stopping after the current step, with a checkpoint (send it again to stop at "
                     "once)\n" % signal.Signals(signum).name).encode())

    def __enter__(self):
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
