"""Trains EfficientNet with a plain tf.Session loop (no Estimator), on NPU, GPU or CPU.

    python train.py --TMP_DATA_PATH=./data/demo --TMP_MODEL_PATH=./model [--TMP_WEIGHTS_PATH=ckpt_dir]

Resumes from the newest intact checkpoint in TMP_MODEL_PATH when there is one; otherwise starts
from the pretrained weights in TMP_WEIGHTS_PATH (model variables only, head skipped when its class
count differs) or from scratch, never in a folder that holds checkpoint files. Checkpoints keep the
official variable names and EMA shadows; how they are kept safe (lock, checks, retention, SIGTERM)
is in checkpointing.py.
"""
import math
import os
import sys
import time

import tensorflow.compat.v1 as tf
from absl import app, flags, logging

import checkpoint_utils
import checkpointing
import common_flags  # noqa: F401  (defines the shared flags)
import device
import efficientnet_builder
import evaluation
import preprocess
import run_config

flags.DEFINE_boolean("is_training", True, "Train (True) or only evaluate TMP_MODEL_PATH on the validation split.")
flags.DEFINE_float("epochs", 1.0, "Epochs to train; ignored when --max_steps > 0.")
flags.DEFINE_integer("image_num", 0, "Training images per epoch; 0 = the number of records in the training set.")
flags.DEFINE_string("TMP_LOG_PATH", "./log", "Folder for TensorBoard summaries.")
flags.DEFINE_string("TMP_WEIGHTS_PATH", "./weights",
                    "Pretrained checkpoint (prefix, or a folder holding one) to start from; "
                    "an empty folder or '' trains from scratch.")
flags.DEFINE_enum("pretrained_weights", "auto", ("auto", "ema", "raw"),
                  "Which values to take from TMP_WEIGHTS_PATH: auto = the EMA shadows when present.")
flags.DEFINE_float("learning_rate", 0.01, "Peak learning rate (after warm-up), for the whole global batch.")
flags.DEFINE_enum("lr_schedule", "constant", ("constant", "exponential", "cosine"),
                  "constant: Ascend fine-tuning default; exponential: official recipe (x0.97 every 2.4 epochs); "
                  "cosine: to zero at the last step.")
flags.DEFINE_float("warmup_epochs", 0.0, "Epochs of linear warm-up from 0 to --learning_rate.")
flags.DEFINE_enum("optimizer", "momentum", ("momentum", "rmsprop", "adam", "sgd"),
                  "momentum: Nesterov, 0.9; rmsprop: official recipe (decay 0.9, momentum 0.9, eps 1e-3); "
                  "adam: as the transfer-learning tutorials; sgd: plain gradient descent.")
flags.DEFINE_float("momentum", 0.9, "Momentum of the momentum and rmsprop optimizers.")
flags.DEFINE_float("weight_decay", 1e-5, "L2 factor on weights (batch-norm parameters excluded).")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the cross-entropy loss.")
flags.DEFINE_float("moving_average_decay", 0.9999,
                   "Decay of the exponential moving average of the weights; 0 turns it off.")
flags.DEFINE_float("dropout_rate", None, "Head dropout; default: the model's (0.2 for B0).")
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
flags.DEFINE_integer("log_every_n_steps", 100, "Steps between log lines.")
flags.DEFINE_integer("seed", None, "Graph-level random seed (initialisation, shuffling, augmentation).")
flags.DEFINE_boolean("freeze_base", False,
                     "Train only head/dense; the rest runs in inference mode (for transfer learning).")
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
    for name in ("save_checkpoints_steps", "keep_checkpoint_max", "image_num"):
        if getattr(FLAGS, name) < 0:
            problems.append("--%s=%d must be >= 0" % (name, getattr(FLAGS, name)))
    if FLAGS.log_every_n_steps < 1:
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
        return checkpoint_utils.resolve_checkpoint(path) if checkpoint_utils.checkpoint_folder(path) else None
    if not os.path.exists(path + ".index") and not os.path.exists(path):
        raise TrainingError("TMP_WEIGHTS_PATH %s does not exist: pass a checkpoint prefix or folder, or '' to "
                            "train from scratch" % path)
    return checkpoint_utils.resolve_checkpoint(path)


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


def _learning_rate(global_step, steps_per_epoch, total_steps):
    step = tf.cast(global_step, tf.float32)
    peak = FLAGS.learning_rate
    if FLAGS.lr_schedule == "exponential":
        decay_steps = max(1, int(2.4 * steps_per_epoch))
        rate = peak * tf.pow(0.97, tf.floor(step / decay_steps))
    elif FLAGS.lr_schedule == "cosine":
        rate = 0.5 * peak * (1.0 + tf.cos(math.pi * tf.minimum(step / total_steps, 1.0)))
    else:
        rate = tf.constant(peak)
    warmup_steps = int(FLAGS.warmup_epochs * steps_per_epoch)
    if warmup_steps > 0:
        rate = tf.where(step < warmup_steps, peak * step / warmup_steps, rate)
    return rate


def _optimizer(learning_rate):
    if FLAGS.optimizer == "momentum":
        return tf.train.MomentumOptimizer(learning_rate, FLAGS.momentum, use_nesterov=True)
    if FLAGS.optimizer == "rmsprop":
        return tf.train.RMSPropOptimizer(learning_rate, decay=0.9, momentum=FLAGS.momentum, epsilon=1e-3)
    if FLAGS.optimizer == "adam":
        return tf.train.AdamOptimizer(learning_rate)
    return tf.train.GradientDescentOptimizer(learning_rate)


class TrainGraph(object):
    """Everything the loop runs: input iterator, model, loss, train op, EMA and saver."""

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

        override_params = {"num_classes": num_classes, "dropout_fn": dev.dropout_fn()}
        if FLAGS.dropout_rate is not None:
            override_params["dropout_rate"] = FLAGS.dropout_rate
        if FLAGS.survival_prob is not None:
            override_params["survival_prob"] = FLAGS.survival_prob
        logits, _ = efficientnet_builder.build_model(
            efficientnet_builder.normalize_images(images, model_name), model_name,
            training=not FLAGS.freeze_base, override_params=override_params)
        self.model_variables = tf.global_variables()
        model_trainable = tf.trainable_variables()
        if FLAGS.freeze_base:
            trained = [v for v in model_trainable if "/head/dense/" in v.op.name]
        else:
            trained = model_trainable

        cross_entropy = tf.losses.softmax_cross_entropy(
            tf.one_hot(labels, num_classes), logits, label_smoothing=FLAGS.label_smoothing)
        decayed = [tf.nn.l2_loss(v) for v in trained if "batch_normalization" not in v.op.name]
        self.loss = cross_entropy + FLAGS.weight_decay * tf.add_n(decayed)
        self.accuracy = tf.reduce_mean(tf.cast(tf.nn.in_top_k(logits, labels, 1), tf.float32))

        self.global_step = tf.train.get_or_create_global_step()
        self.learning_rate = _learning_rate(self.global_step, steps_per_epoch, total_steps)
        optimizer = dev.wrap_optimizer(_optimizer(self.learning_rate))
        update_ops = [] if FLAGS.freeze_base else tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.control_dependencies(update_ops):
            train_op = optimizer.minimize(self.loss, global_step=self.global_step, var_list=trained)

        self.ema_sync = None
        if FLAGS.moving_average_decay > 0:
            averaged = model_trainable + [
                v for v in self.model_variables if "moving_mean" in v.op.name or "moving_variance" in v.op.name]
            ema = tf.train.ExponentialMovingAverage(FLAGS.moving_average_decay, num_updates=self.global_step)
            with tf.control_dependencies([train_op]):
                train_op = ema.apply(averaged)
            # After loading pretrained weights the shadows must start from them, not from the random init.
            self.ema_sync = tf.group(*[tf.assign(ema.average(v), v) for v in averaged])
        self.train_op = train_op
        shadows = [ema.average(v) for v in averaged] if FLAGS.moving_average_decay > 0 else []
        self.saver = checkpointing.CheckpointSaver(model_dir, FLAGS.keep_checkpoint_max, self.global_step,
                                                   self.model_variables + shadows)


def _resume_checkpoint(model_dir):
    """The newest intact checkpoint in model_dir (whatever its `checkpoint` state file says), or None
    for an empty folder; a folder whose checkpoint files are all damaged is an error, because
    training from scratch there would overwrite them."""
    latest, damaged = checkpoint_utils.newest_intact_checkpoint(model_dir)
    if damaged:
        logging.warning("skipping damaged checkpoint(s): %s", "; ".join(
            "%s (%s)" % (os.path.basename(prefix), problem) for prefix, problem in damaged))
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
    use_ema = checkpoint_utils.resolve_use_ema({"ema": True, "raw": False}.get(FLAGS.pretrained_weights, "auto"),
                                               weights_prefix)
    skipped = checkpoint_utils.restore(sess, weights_prefix, graph.model_variables, use_ema,
                                       skip_mismatched_head=True)
    if graph.ema_sync is not None:
        sess.run(graph.ema_sync)
    message = "loaded pretrained %s weights from %s" % ("EMA" if use_ema else "raw", weights_prefix)
    if skipped:
        message += "; skipped (shape differs, trained from scratch): %s" % ", ".join(skipped)
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


def _duration(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return "%d:%02d:%02d" % (hours, minutes, seconds)


def _summary(writer, step, values):
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]),
                       step)


def _train_loop(sess, graph, train_op, is_chief, progress, writer, model_dir, stop, log_every, save_every):
    """Runs train_op until global_step reaches the total, logging every log_every steps and saving (on the
    chief) every save_every steps and at the end; returns the last step.

    A SIGTERM/SIGINT recorded by `stop` (its `signum`) ends the loop after the running step, with a
    checkpoint, as checkpointing.Interrupted."""
    total_steps = progress.total_steps
    step = saved_step = progress.mark_step
    if step >= total_steps:
        logging.info("TMP_MODEL_PATH already holds step %d >= %d total steps: nothing to train", step, total_steps)
    while step < total_steps and stop.signum is None:
        _, loss, accuracy, learning_rate = sess.run([train_op, graph.loss, graph.accuracy, graph.learning_rate])
        step = sess.run(graph.global_step)
        if not math.isfinite(loss):
            raise TrainingError("loss is %s at step %d: lower --learning_rate; %s (resuming starts there)"
                                % (loss, step, checkpointing.last_good_text(model_dir)))
        progress.add(loss, accuracy)
        if step % log_every == 0 or step >= total_steps:
            logging.info(progress.line(step, learning_rate))
            _summary(writer, step, {"loss": loss, "train_top1": progress.last_accuracy,
                                    "learning_rate": learning_rate})
        if is_chief and (save_every > 0 and step % save_every == 0 or step >= total_steps):
            graph.saver.save(sess)
            saved_step = step
    if stop.signum is not None:
        prefix = graph.saver.save(sess) if is_chief and step > saved_step else None
        raise checkpointing.Interrupted(stop.signum, step, prefix)
    return step


def _run_training(sess, graph, train_op, dev, progress, writer, model_dir, stop, data_path, label_offset,
                  num_classes):
    """The loop, with input-pipeline failures explained as one DatasetError."""
    log_every = dev.round_to_loop(FLAGS.log_every_n_steps, "log_every_n_steps")
    save_every = dev.round_to_loop(FLAGS.save_checkpoints_steps, "save_checkpoints_steps")
    try:
        return _train_loop(sess, graph, train_op, dev.rank_id == 0, progress, writer, model_dir, stop, log_every,
                           save_every)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        explained = preprocess.explain_pipeline_error(error, data_path, "train", label_offset, num_classes)
        if explained is None:
            raise
        raise explained


def train():
    start_time = time.time()
    _check_flags()
    dev = device.resolve(training=True)
    logging.info("device: %s", dev.describe())
    model_dir = _checked_folder(FLAGS.TMP_MODEL_PATH, "TMP_MODEL_PATH")
    _checked_folder(FLAGS.TMP_LOG_PATH, "TMP_LOG_PATH")
    # From here on SIGTERM/SIGINT only request a stop: the loop saves first (a signal during graph building
    # is acted on when the loop starts; after the last step it only changes the exit code).
    with checkpointing.StopSignals() as stop:
        if dev.rank_id != 0:
            step = _train(dev, model_dir, start_time, stop)
        else:
            with checkpointing.ModelFolderLock(model_dir):
                step = _train(dev, model_dir, start_time, stop)
        if stop.signum is not None:
            raise checkpointing.Interrupted(stop.signum, step, None)


def _train(dev, model_dir, start_time, stop):
    """Builds the graph, restores or initializes, runs the loop and prints the ModelZoo summary lines;
    returns the last step."""
    latest = _resume_checkpoint(model_dir)
    weights_prefix = _pretrained_prefix(FLAGS.TMP_WEIGHTS_PATH)
    recorded = run_config.read(model_dir)
    model_name = (FLAGS.model_name or recorded.get("model_name")
                  or (weights_prefix and checkpoint_utils.checkpoint_model_name(weights_prefix)) or "efficientnet-b0")
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
        tf.set_random_seed(FLAGS.seed)
    graph = TrainGraph(dev, model_dir, model_name, num_classes, image_size, steps_per_epoch, total_steps,
                       info["label_offset"])
    writer = tf.summary.FileWriter(FLAGS.TMP_LOG_PATH)
    with tf.Session(config=dev.session_config()) as sess:
        logging.info(_restore_or_initialize(sess, graph, latest, model_dir, weights_prefix))
        if dev.rank_id == 0:
            run_config.write(model_dir, model_name=model_name, num_classes=num_classes, image_size=image_size,
                             data_path=FLAGS.TMP_DATA_PATH,
                             labels_file=run_config.copy_labels(model_dir, info["labels_file"]))
        sess.run(graph.iterator.initializer)
        train_op = dev.finalize_train_op(sess, graph.train_op)
        progress = ProgressLog(total_steps, steps_per_epoch, global_batch, sess.run(graph.global_step))
        step = _run_training(sess, graph, train_op, dev, progress, writer, model_dir, stop, FLAGS.TMP_DATA_PATH,
                             info["label_offset"], num_classes)
    writer.close()
    elapsed = time.time() - start_time
    throughput = progress.images_per_second()
    logging.info("done: %d steps, checkpoints in %s, logs in %s", step, model_dir, FLAGS.TMP_LOG_PATH)
    print("Final Performance images/sec : %s" % ("%.2f" % throughput if throughput else "n/a"))
    if progress.last_accuracy is not None:
        print("Final Train Accuracy : %.4f" % progress.last_accuracy)
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
    except (TrainingError, preprocess.DatasetError, checkpoint_utils.CheckpointError, device.DeviceError,
            checkpointing.CheckpointSaveError, checkpointing.LockError) as error:
        sys.exit("error: %s" % error)
    except checkpointing.Interrupted as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(stopped.exit_code)
    except KeyboardInterrupt:
        print("interrupted: stopped at once, nothing new saved (the checkpoints on disk are kept); run the same "
              "command again to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
