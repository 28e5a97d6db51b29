"""Trains EfficientNet with a plain tf.Session loop (no Estimator), on NPU, GPU or CPU.

    python train.py --TMP_DATA_PATH=./data/demo --TMP_MODEL_PATH=./model [--TMP_WEIGHTS_PATH=ckpt_dir]

Resumes from the newest intact checkpoint in TMP_MODEL_PATH when there is one; otherwise starts
from the pretrained weights in TMP_WEIGHTS_PATH (model variables only, head skipped when its class
count differs) or from scratch, never in a folder that holds checkpoint files. Checkpoints keep the
official variable names and EMA shadows; how they are kept safe (lock, checks, retention, SIGTERM)
is in checkpoint_writer.py.
"""
import math
import os
import sys
import time

import tensorflow.compat.v1 as tf
from absl import app, flags, logging

from effnet.checkpoints import checkpoint_reader
from effnet.checkpoints import checkpoint_writer
from effnet import common_flags  # noqa: F401  (defines the shared flags)
from effnet.devices import device
import efficientnet_builder
from effnet.evaluation import evaluation
import preprocess
from effnet.checkpoints import run_config
from effnet.training import train_step, training_policy

flags.DEFINE_boolean("is_training", True, "Train (True) or only evaluate TMP_MODEL_PATH on the validation split.")
flags.DEFINE_float("epochs", 1.0, "Epochs to train; ignored when --max_steps > 0.")
flags.DEFINE_integer("image_num", 0, "Training images per epoch; 0 = the number of records in the training set.")
flags.DEFINE_string("TMP_LOG_PATH", "./log", "Folder for TensorBoard summaries.")
flags.DEFINE_string("TMP_WEIGHTS_PATH", "./weights",
                    "Pretrained checkpoint (prefix, or a folder holding one) to start from; "
                    "an empty folder or '' trains from scratch.")
flags.DEFINE_enum("pretrained_weights", "auto", ("auto", "ema", "raw"),
                  "Which values to take from TMP_WEIGHTS_PATH: auto = the EMA shadows when present.")
flags.DEFINE_float("learning_rate", 0.01,
                   "Peak learning rate (after warm-up) for the global batch, batch_size x devices; used as given "
                   "(linear scaling rule: scale it in proportion to the global batch).")
flags.DEFINE_enum("lr_schedule", "constant", ("constant", "exponential", "cosine"),
                  "constant: Ascend fine-tuning default; exponential: official recipe (x0.97 every 2.4 epochs); "
                  "cosine: to zero at the last step.")
flags.DEFINE_float("warmup_epochs", 0.0, "Epochs of linear warm-up from 0 to --learning_rate.")
flags.DEFINE_enum("optimizer", "momentum", train_step.OPTIMIZERS,
                  "momentum: Nesterov, 0.9; rmsprop: official recipe (decay 0.9, momentum 0.9, eps 1e-3); "
                  "adam: as the transfer-learning tutorials; sgd: plain gradient descent.")
flags.DEFINE_float("momentum", 0.9, "Momentum of the momentum and rmsprop optimizers.")
flags.DEFINE_float("weight_decay", 1e-5, "L2 factor on weights (batch-norm parameters excluded).")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the cross-entropy loss.")
flags.DEFINE_float("moving_average_decay", 0.9999,
                   "Decay of the exponential moving average of the weights; 0 turns it off.")
flags.DEFINE_float("dropout_rate", None, "Head dropout; default: the model's (0.2 for B0).")
flags.DEFINE_float("batch_norm_momentum", None,
                   "Momentum of the batch-norm moving statistics; default: 0.99 for runs of 1000 steps or more, "
                   "less for shorter ones (see training_policy.batch_norm_momentum).")
flags.DEFINE_float("survival_prob", None, "Stochastic-depth survival probability of the last block; default 0.8.")
flags.DEFINE_enum("augment", "none", ("none", "autoaugment", "randaugment"), "Extra training augmentation.")
flags.DEFINE_integer("randaug_num_layers", 2, "RandAugment: operations per image.")
flags.DEFINE_integer("randaug_magnitude", 10, "RandAugment: magnitude 0..30.")
flags.DEFINE_float("min_crop_area", preprocess.MIN_CROP_AREA,
                   "Smallest random crop, as a fraction of the image area (official ImageNet value 0.08; "
                   "small images such as 32x32 digits want 0.75 or more; 1.0 always takes the centre crop).")
flags.DEFINE_boolean("random_flip", True, "Flip training images left-right at random (off for digits, text).")
flags.DEFINE_integer("max_steps", 0, "Total training steps; 0 = derived from --epochs and --image_num.")
flags.DEFINE_integer("save_checkpoints_steps", 1000, "Steps between checkpoints (one is always saved at the end).")
flags.DEFINE_integer("keep_checkpoint_max", 5, "model.ckpt-* checkpoints kept in TMP_MODEL_PATH, counted on disk "
                     "(earlier runs' included); 0 keeps all.")
flags.DEFINE_integer("log_every_n_steps", None, "Steps between log lines; default: %d, or a tenth of a shorter "
                     "run (see training_policy.log_interval)." % training_policy.DEFAULT_LOG_INTERVAL)
flags.DEFINE_integer("seed", None, "Graph-level random seed (initialisation, shuffling, augmentation); rank r of a "
                                   "multi-device run uses seed + r and starts from rank 0's variables.")
flags.DEFINE_boolean("freeze_base", False,
                     "Train only head/dense; the rest runs in inference mode (for transfer learning).")
flags.DEFINE_float("eval_every_n_epochs", None,
                   "Validate every N epochs (and at the end); default: %d times a run for validation splits of up "
                   "to %d images, never for larger ones; 0 = off." % (training_policy.AUTO_EVALUATIONS_PER_RUN,
                                                                       training_policy.AUTO_VALIDATION_MAX_IMAGES))
flags.DEFINE_integer("eval_every_n_steps", 0, "Validate every N steps (and at the end); wins over --eval_every_n_epochs.")
flags.DEFINE_integer("early_stopping_patience", 0,
                     "Stop after this many validations without a better top-1 than the best (kept in "
                     "TMP_MODEL_PATH/best/); 0 = off.")
FLAGS = flags.FLAGS

IMAGENET_TRAIN_SHARDS = 1024
IMAGENET_TRAIN_IMAGES = 1281167


class TrainingError(ValueError):
    """A run that cannot start or go on; the message says what to change."""


def _check_flags():
    """Flag values that cannot work, found before any data is read or graph built."""
    problems = []
    if FLAGS.image_size < 0:
        problems.append("--image_size=%d must be positive (or 0 for the model's own)" % FLAGS.image_size)
    if not 0.0 < FLAGS.min_crop_area <= 1.0:
        problems.append("--min_crop_area=%g must be in (0, 1]" % FLAGS.min_crop_area)
    if FLAGS.max_steps < 0:
        problems.append("--max_steps=%d must be >= 0" % FLAGS.max_steps)
    if FLAGS.max_steps == 0 and not FLAGS.epochs > 0:
        problems.append("--epochs=%g must be > 0 (or pass --max_steps)" % FLAGS.epochs)
    for name in ("save_checkpoints_steps", "keep_checkpoint_max", "image_num", "eval_every_n_steps",
                 "early_stopping_patience"):
        if getattr(FLAGS, name) < 0:
            problems.append("--%s=%d must be >= 0" % (name, getattr(FLAGS, name)))
    if FLAGS.eval_every_n_epochs is not None and FLAGS.eval_every_n_epochs < 0:
        problems.append("--eval_every_n_epochs=%g must be >= 0" % FLAGS.eval_every_n_epochs)
    if FLAGS.log_every_n_steps is not None and FLAGS.log_every_n_steps < 1:
        problems.append("--log_every_n_steps=%d must be >= 1" % FLAGS.log_every_n_steps)
    if problems:
        raise TrainingError("; ".join(problems))


def _checked_folder(path, flag):
    """Creates the folder if needed; a file in the way, or a folder that cannot be made, is an error."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise TrainingError("%s %s is a file, not a folder: pass a folder" % (flag, path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise TrainingError("cannot create %s %s (%s): pass a folder you can write to" % (flag, path, error.strerror))
    if not os.access(path, os.W_OK | os.X_OK):
        raise TrainingError("%s %s is not writable: pass a folder you can write to" % (flag, path))
    return path


def _pretrained_prefix(path):
    """The checkpoint prefix to start from, or None for training from scratch (no path, or a folder
    without checkpoints)."""
    if not path:
        return None
    if os.path.isdir(path):
        return checkpoint_reader.resolve_checkpoint(path) if checkpoint_reader.checkpoint_folder(path) else None
    if not os.path.exists(path + ".index") and not os.path.exists(path):
        raise TrainingError("TMP_WEIGHTS_PATH %s does not exist: pass a checkpoint prefix or folder, or '' to "
                            "train from scratch" % path)
    return checkpoint_reader.resolve_checkpoint(path)


def _num_classes(info):
    """--num_classes, else the dataset's; an error when the data's labels do not fit."""
    data_classes = info["num_classes"]
    if FLAGS.num_classes and data_classes and data_classes > FLAGS.num_classes:
        raise TrainingError("the data has %d classes but --num_classes=%d: raise --num_classes to at least %d"
                            % (data_classes, FLAGS.num_classes, data_classes))
    return FLAGS.num_classes or data_classes or preprocess.IMAGENET_NUM_CLASSES


def _train_image_count(train_files, info):
    """--image_num, else the dataset info's count, ImageNet's for its 1024 shards, else a count of the records."""
    if FLAGS.image_num > 0:
        return FLAGS.image_num
    count = info["num_examples"]["train"]
    if not count and len(train_files) == IMAGENET_TRAIN_SHARDS and train_files[0].endswith("-of-01024"):
        logging.info("no dataset_info.json: taking ImageNet's %d training images (pass --image_num otherwise)",
                     IMAGENET_TRAIN_IMAGES)
        count = IMAGENET_TRAIN_IMAGES
    if not count:
        logging.info("counting the training records once (pass --image_num to skip this)")
        count = preprocess.count_records(train_files)
    if count <= 0:
        raise TrainingError("the training records in %s hold no images" % FLAGS.TMP_DATA_PATH)
    return count


def step_settings():
    """The training step's settings from the flags."""
    return train_step.StepSettings(**{field: getattr(FLAGS, field) for field in train_step.StepSettings._fields})


class TrainGraph(train_step.TrainStep):
    """The training step on the training records, plus what the loop needs around it: the input iterator,
    the savers and the rank broadcast."""

    def __init__(self, dev, model_dir, model_name, num_classes, image_size, steps_per_epoch, total_steps,
                 label_offset):
        num_workers, worker_index = dev.shard_info()
        dataset = preprocess.build_dataset(
            FLAGS.TMP_DATA_PATH, is_training=True, image_size=image_size, batch_size=FLAGS.batch_size,
            num_workers=num_workers, worker_index=worker_index,
            augment_name=None if FLAGS.augment == "none" else FLAGS.augment,
            randaug_num_layers=FLAGS.randaug_num_layers, randaug_magnitude=FLAGS.randaug_magnitude,
            seed=FLAGS.seed, min_crop_area=FLAGS.min_crop_area, random_flip=FLAGS.random_flip,
            label_offset=label_offset, num_classes=num_classes)
        self.iterator = tf.data.make_initializable_iterator(dataset)
        images, labels = self.iterator.get_next()
        super(TrainGraph, self).__init__(images, labels, dev, model_name, num_classes, step_settings(),
                                         steps_per_epoch, total_steps)
        checked = self.model_variables + self.shadows
        self.saver = checkpoint_writer.CheckpointSaver(model_dir, FLAGS.keep_checkpoint_max, self.global_step,
                                                       checked)
        # best/ holds what evaluation reads (weights and shadows), not the optimizer state; the weights were
        # checked by the save just before.
        self.best_saver = checkpoint_writer.CheckpointSaver(
            os.path.join(model_dir, training_policy.BEST_DIR), 1, self.global_step, [],
            var_list=checked + [self.global_step])
        # Rank 0's state to every rank, after restore or initialization (None with one process).
        self.broadcast = dev.broadcast_variables_op(tf.global_variables())


def _resume_checkpoint(model_dir):
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


def _restore_or_initialize(sess, graph, latest, model_dir, weights_prefix):
    """Resumes from `latest`, else loads pretrained weights; returns a log line saying which."""
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
    use_ema = checkpoint_reader.resolve_use_ema({"ema": True, "raw": False}.get(FLAGS.pretrained_weights, "auto"),
                                               weights_prefix)
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


class ProgressLog(object):
    """One line per interval: epoch, step, loss, top-1, learning rate, images/s, time left."""

    def __init__(self, total_steps, steps_per_epoch, global_batch, first_step):
        self.total_steps, self.steps_per_epoch, self.global_batch = total_steps, steps_per_epoch, global_batch
        self.mark_step, self.mark_time = first_step, time.time()
        self.timed_steps, self.timed_seconds = 0, 0.0
        self.warm = False
        self.losses, self.accuracies = [], []
        self.last_accuracy = None

    def add(self, loss, accuracy):
        self.losses.append(loss)
        self.accuracies.append(accuracy)

    def pause(self, seconds):
        """Leaves `seconds` spent outside training (validation) out of the speed and time-left figures."""
        self.mark_time += seconds

    def images_per_second(self):
        if self.timed_seconds <= 0:
            return None
        return self.timed_steps * self.global_batch / self.timed_seconds

    def line(self, step, learning_rate):
        now = time.time()
        steps, seconds = step - self.mark_step, now - self.mark_time
        rate = steps * self.global_batch / seconds if seconds > 0 else 0.0
        if self.warm:
            self.timed_steps += steps
            self.timed_seconds += seconds
        self.warm = True
        self.mark_step, self.mark_time = step, now
        loss = sum(self.losses) / max(1, len(self.losses))
        self.last_accuracy = sum(self.accuracies) / max(1, len(self.accuracies))
        self.losses, self.accuracies = [], []
        seconds_per_step = seconds / steps if steps else 0.0
        return ("epoch %.2f step %d/%d loss %.4f top1 %.4f lr %.3g images/s %.1f time left %s" % (
            step / self.steps_per_epoch, step, self.total_steps, loss, self.last_accuracy, learning_rate, rate,
            _duration(seconds_per_step * (self.total_steps - step))))


class Validation(object):
    """In-training validation of the checkpoints just saved (on the chief), through evaluation.Evaluator as
    test.py evaluates them: one log line, TensorBoard scalars in the `eval` run, the history in
    TMP_MODEL_PATH, the best checkpoint in TMP_MODEL_PATH/best/ and the early-stopping decision."""

    def __init__(self, evaluator, interval, patience, model_dir, log_dir, best_saver, settings, steps_per_epoch,
                 start_step):
        self.evaluator, self.interval, self.patience = evaluator, interval, patience
        self.model_dir, self.best_saver, self.settings = model_dir, best_saver, settings
        self.steps_per_epoch = steps_per_epoch
        self.best_dir = _checked_folder(os.path.join(model_dir, training_policy.BEST_DIR), "TMP_MODEL_PATH/best")
        self.writer = tf.summary.FileWriter(os.path.join(log_dir, "eval"))
        self.history = training_policy.read_history(model_dir, start_step)
        self.seconds = 0.0
        self.last_top1 = None

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

    def run(self, sess, prefix, step):
        """Evaluates checkpoint `prefix` (of step `step`, restored from disk as test.py would); saves a new
        best into best/. Returns the seconds taken."""
        start = time.time()
        result = self.evaluator.run(prefix, checkpoint_reader.resolve_use_ema("auto", prefix))
        entry = {"step": int(step), "epoch": round(step / self.steps_per_epoch, 3), "loss": result["loss"],
                 "top1": result["top1"], "top5": result["top5"]}
        best = training_policy.best_entry(self.history)
        if best is None or entry["top1"] > best["top1"]:
            self.best_saver.save(sess)
            run_config.write(self.best_dir, **dict(self.settings, best_step=int(step), best_top1=result["top1"]))
            run_config.copy_labels(self.best_dir, self.settings.get("labels_file"))
            best = entry
        self.history.append(entry)  # written last: a run killed before this redoes the validation
        training_policy.write_history(self.model_dir, self.history)
        _summary(self.writer, step, {"loss": result["loss"], "top1": result["top1"], "top5": result["top5"]})
        self.writer.flush()
        self.last_top1 = result["top1"]
        seconds = time.time() - start
        self.seconds += seconds
        logging.info("validation: step %d epoch %.2f loss %.4f top1 %.4f top5 %.4f images/s %.1f (%d images, %.1f s); "
                     "best top1 %.4f at step %d", step, entry["epoch"], result["loss"], result["top1"], result["top5"],
                     result["images_per_second"], result["count"], seconds, best["top1"], best["step"])
        return seconds


def _duration(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return "%d:%02d:%02d" % (hours, minutes, seconds)


def _summary(writer, step, values):
    if writer is None:  # not rank 0
        return
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]),
                       step)


def _train_loop(sess, graph, train_op, is_chief, progress, writer, model_dir, stop, log_every, save_every,
                validation=None):
    """Runs train_op until global_step reaches the total, logging every log_every steps and saving (on the
    chief) every save_every steps and at the end; returns the last step. `validation` (chief only) evaluates
    the checkpoints it asks for and may stop the run early.

    A SIGTERM/SIGINT recorded by `stop` (its `signum`) ends the loop after the running step, with a
    checkpoint, as checkpoint_writer.Interrupted."""
    total_steps = progress.total_steps
    step = saved_step = progress.mark_step
    if step >= total_steps:
        logging.info("TMP_MODEL_PATH already holds step %d >= %d total steps: nothing to train", step, total_steps)
    if validation is not None and validation.stop():
        return step
    while step < total_steps and stop.signum is None:
        _, loss, accuracy, learning_rate = sess.run([train_op, graph.loss, graph.accuracy, graph.learning_rate])
        step = sess.run(graph.global_step)
        if not math.isfinite(loss):
            raise TrainingError("loss is %s at step %d: lower --learning_rate; %s (resuming starts there)"
                                % (loss, step, checkpoint_writer.last_good_text(model_dir)))
        progress.add(loss, accuracy)
        if step % log_every == 0 or step >= total_steps:
            logging.info(progress.line(step, learning_rate))
            _summary(writer, step, {"loss": loss, "train_top1": progress.last_accuracy,
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


def _run_training(sess, graph, train_op, dev, progress, writer, model_dir, stop, data_path, label_offset,
                  num_classes, validation):
    """The loop, with input-pipeline failures explained as one DatasetError."""
    log_every = dev.round_to_loop(training_policy.log_interval(FLAGS.log_every_n_steps, progress.total_steps),
                                  "log_every_n_steps")
    save_every = dev.round_to_loop(FLAGS.save_checkpoints_steps, "save_checkpoints_steps")
    with preprocess.pipeline_errors_explained(data_path, "train", label_offset, num_classes):
        return _train_loop(sess, graph, train_op, dev.is_chief, progress, writer, model_dir, stop, log_every,
                           save_every, validation)


def train():
    start_time = time.time()
    _check_flags()
    dev = device.resolve(training=True)
    logging.info("device: %s", dev.describe())
    model_dir = _checked_folder(FLAGS.TMP_MODEL_PATH, "TMP_MODEL_PATH")
    _checked_folder(FLAGS.TMP_LOG_PATH, "TMP_LOG_PATH")
    # From here on SIGTERM/SIGINT only request a stop: the loop saves first (a signal during graph building
    # is acted on when the loop starts; after the last step it only changes the exit code).
    with checkpoint_writer.StopSignals() as stop:
        if not dev.is_chief:
            step = _train(dev, model_dir, start_time, stop)
        else:
            with checkpoint_writer.ModelFolderLock(model_dir):
                step = _train(dev, model_dir, start_time, stop)
        if stop.signum is not None:
            raise checkpoint_writer.Interrupted(stop.signum, step, None)


def _validation(dev, model_dir, info, graph, settings, steps_per_epoch, total_steps, start_step):
    """The in-training Validation the flags ask for (chief only), or None."""
    try:
        preprocess.find_record_files(FLAGS.TMP_DATA_PATH, "validation")
    except preprocess.DatasetError:
        validation_images = 0
    else:  # unknown count (no dataset_info.json): treated as large
        validation_images = info["num_examples"]["validation"] or training_policy.AUTO_VALIDATION_MAX_IMAGES + 1
    interval = training_policy.evaluation_interval(FLAGS.eval_every_n_epochs, FLAGS.eval_every_n_steps,
                                                   steps_per_epoch, total_steps, validation_images,
                                                   FLAGS.batch_size * dev.rank_size)
    if FLAGS.early_stopping_patience and (interval == 0 or dev.rank_size > 1):
        raise TrainingError("--early_stopping_patience needs validation on one device: pass "
                            "--eval_every_n_epochs (and TMP_DATA_PATH with validation-* records), or drop it")
    if interval == 0 or not dev.is_chief:
        logging.info("no validation during training (%s)", "see --eval_every_n_epochs" if validation_images
                     else "no validation records")
        return None
    logging.info("validating every %d steps and at the end", interval)
    evaluator = evaluation.Evaluator(FLAGS.TMP_DATA_PATH, settings["model_name"], settings["num_classes"],
                                     settings["image_size"], FLAGS.batch_size, info["label_offset"],
                                     device.resolve(training=False))
    return Validation(evaluator, interval, FLAGS.early_stopping_patience, model_dir, FLAGS.TMP_LOG_PATH,
                      graph.best_saver, settings, steps_per_epoch, start_step)


def _train(dev, model_dir, start_time, stop):
    """Builds the graph, restores or initializes, runs the loop and prints the ModelZoo summary lines;
    returns the last step."""
    latest = _resume_checkpoint(model_dir)
    weights_prefix = _pretrained_prefix(FLAGS.TMP_WEIGHTS_PATH)
    recorded = run_config.read(model_dir)
    model_name = (FLAGS.model_name or recorded.get("model_name")
                  or (weights_prefix and checkpoint_reader.checkpoint_model_name(weights_prefix)) or "efficientnet-b0")
    info = preprocess.read_dataset_info(FLAGS.TMP_DATA_PATH)
    train_files = preprocess.find_record_files(FLAGS.TMP_DATA_PATH, "train")
    num_classes = _num_classes(info)
    image_size = FLAGS.image_size or recorded.get("image_size") or efficientnet_builder.model_spec(
        model_name).resolution
    image_num = _train_image_count(train_files, info)
    global_batch = FLAGS.batch_size * dev.rank_size
    steps_per_epoch = image_num / float(global_batch)
    total_steps = FLAGS.max_steps if FLAGS.max_steps > 0 else max(1, int(math.ceil(FLAGS.epochs * steps_per_epoch)))
    total_steps = dev.round_to_loop(total_steps, "total training steps")
    logging.info("model %s, %d classes, image size %d, batch %d x %d device(s), %d images/epoch, %d steps "
                 "(%.2f epochs)", model_name, num_classes, image_size, FLAGS.batch_size, dev.rank_size, image_num,
                 total_steps, total_steps / steps_per_epoch)

    if FLAGS.seed is not None:
        tf.set_random_seed(FLAGS.seed + dev.rank_id)
    graph = TrainGraph(dev, model_dir, model_name, num_classes, image_size, steps_per_epoch, total_steps,
                       info["label_offset"])
    # Rank 0 alone writes summaries, run_config.json, checkpoints and the final-result lines.
    writer = tf.summary.FileWriter(FLAGS.TMP_LOG_PATH) if dev.is_chief else None
    with tf.Session(config=dev.session_config()) as sess:
        logging.info(_restore_or_initialize(sess, graph, latest, model_dir, weights_prefix))
        if dev.is_chief and latest:  # once restored: what a run killed before its retention left over goes
            checkpoint_writer.apply_retention(model_dir, FLAGS.keep_checkpoint_max, latest)
        if graph.broadcast is not None:
            sess.run(graph.broadcast)
            logging.info("rank %d: every variable set to rank 0's (step %d)", dev.rank_id,
                         sess.run(graph.global_step))
        settings = dict(model_name=model_name, num_classes=num_classes, image_size=image_size,
                        data_path=FLAGS.TMP_DATA_PATH)
        if dev.is_chief:
            settings["labels_file"] = run_config.copy_labels(model_dir, info["labels_file"])
            run_config.write(model_dir, **settings)
        sess.run(graph.iterator.initializer)
        train_op = dev.finalize_train_op(sess, graph.train_op)
        progress = ProgressLog(total_steps, steps_per_epoch, global_batch, sess.run(graph.global_step))
        validation = _validation(dev, model_dir, info, graph, settings, steps_per_epoch, total_steps,
                                 progress.mark_step)
        step = _run_training(sess, graph, train_op, dev, progress, writer, model_dir, stop, FLAGS.TMP_DATA_PATH,
                             info["label_offset"], num_classes, validation)
    if validation is not None:
        validation.close()
        logging.info("validation: %d evaluation(s) took %.1f s, %.1f%% of the run", len(validation.history),
                     validation.seconds, 100.0 * validation.seconds / max(time.time() - start_time, 1e-9))
    elapsed = time.time() - start_time
    throughput = progress.images_per_second()
    logging.info("done: %d steps, checkpoints in %s, logs in %s", step, model_dir, FLAGS.TMP_LOG_PATH)
    if not dev.is_chief:
        return step
    writer.close()
    print("Final Performance images/sec : %s" % ("%.2f" % throughput if throughput else "n/a"))
    if progress.last_accuracy is not None:
        print("Final Train Accuracy : %.4f" % progress.last_accuracy)
    if validation is not None and validation.last_top1 is not None:
        print("Final Validation Accuracy : %.4f" % validation.last_top1)
    print("E2E Training Duration sec : %d" % round(elapsed))
    sys.stdout.flush()
    return step


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    try:
        if FLAGS.is_training:
            train()
        else:
            evaluation.main_from_flags()
    except (TrainingError, preprocess.DatasetError, checkpoint_reader.CheckpointError, device.DeviceError,
            checkpoint_writer.CheckpointSaveError, checkpoint_writer.LockError) as error:
        sys.exit("error: %s" % error)
    except checkpoint_writer.Interrupted as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(stopped.exit_code)
    except KeyboardInterrupt:
        print("interrupted: stopped at once, nothing new saved (the checkpoints on disk are kept); run the same "
              "command again to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
