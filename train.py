"""Trains EfficientNet with a plain tf.Session loop (no Estimator), on NPU, GPU or CPU.

    python train.py --TMP_DATA_PATH=./data/demo --TMP_MODEL_PATH=./model [--TMP_WEIGHTS_PATH=ckpt_dir]

Resumes from the newest intact checkpoint in TMP_MODEL_PATH when there is one; otherwise starts
from the pretrained weights in TMP_WEIGHTS_PATH (model variables only, head skipped when its class
count differs) or from scratch, never in a folder that holds checkpoint files. Checkpoints keep the
official variable names and EMA shadows; how they are kept safe (lock, checks, retention, SIGTERM)
is in checkpoint_writer.py.
"""
import functools
import math
import os
import sys
import time

import tensorflow.compat.v1 as tf
from absl import flags, logging

import efficientnet_builder
import preprocess
from effnet import cli, common_flags
from effnet.checkpoints import checkpoint_reader, checkpoint_writer, run_config
from effnet.data import pipeline_errors
from effnet.devices import device
from effnet.evaluation import evaluation
from effnet.training import loop, resume, train_step, training_policy
from effnet.training.errors import TrainingError, checked_folder
from effnet.training.progress import ProgressLog
from effnet.training.validation import Validation

FLAGS = flags.FLAGS


def define_flags():
    """Defines train.py's flags, with those of evaluation (--nois_training), which include common_flags' and
    the device's."""
    evaluation.define_flags()
    flags.DEFINE_boolean("is_training", True, "Train (True) or only evaluate TMP_MODEL_PATH on the validation split.")
    flags.DEFINE_float("epochs", 1.0, "Epochs to train; ignored when --max_steps > 0.")
    flags.DEFINE_integer("image_num", 0, "Training images per epoch; 0 = the number of records in the training set.")
    flags.DEFINE_string("TMP_LOG_PATH", "./log", "Folder for TensorBoard summaries.")
    flags.DEFINE_string("TMP_WEIGHTS_PATH", "./weights",
                        "Pretrained checkpoint (prefix, or a folder holding one) to start from; "
                        "an empty folder or '' trains from scratch.")
    cli.define_weights_aliases(("pretrained_weights",))  # --weights_variant is in common_flags
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
    flags.DEFINE_integer("eval_every_n_steps", 0,
                         "Validate every N steps (and at the end); wins over --eval_every_n_epochs.")
    flags.DEFINE_integer("early_stopping_patience", 0,
                         "Stop after this many validations without a better top-1 than the best (kept in "
                         "TMP_MODEL_PATH/best/); 0 = off.")

IMAGENET_TRAIN_SHARDS = 1024
IMAGENET_TRAIN_IMAGES = 1281167


_FLAG_RANGES = (
    ("learning_rate", lambda v: 0 <= v < math.inf, ">= 0"),
    ("warmup_epochs", lambda v: 0 <= v < math.inf, ">= 0"),
    ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("weight_decay", lambda v: 0 <= v < math.inf, ">= 0"),
    ("label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("moving_average_decay", lambda v: 0 <= v < 1, "in [0, 1) (0 turns it off)"),
    ("dropout_rate", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("batch_norm_momentum", lambda v: 0 <= v <= 1, "in [0, 1] (1 freezes the statistics)"),
    ("survival_prob", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("randaug_num_layers", lambda v: v >= 0, ">= 0"),
    ("randaug_magnitude", lambda v: 0 <= v <= 30, "in [0, 30]"),
)


def _check_flags():
    """Flag values that cannot work, found before any data is read or graph built."""
    problems = common_flags.problems()
    for name, fits, allowed in _FLAG_RANGES:
        value = getattr(FLAGS, name)
        if value is not None and not fits(value):  # comparisons written so that nan fails too
            problems.append("--%s=%g must be %s" % (name, value, allowed))
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
    if FLAGS.early_stopping_patience and FLAGS.eval_every_n_steps == 0 and FLAGS.eval_every_n_epochs == 0:
        problems.append("--early_stopping_patience=%d needs validation, which --eval_every_n_epochs=0 turns off"
                        % FLAGS.early_stopping_patience)
    if problems:
        raise TrainingError("; ".join(problems))


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
        missing_info = preprocess.missing_info_text(FLAGS.TMP_DATA_PATH)
        if missing_info:
            raise TrainingError("%s, more than --num_classes=%d: %s"
                                % (missing_info, FLAGS.num_classes, preprocess.MISSING_INFO_FIX))
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


def _run_training(sess, graph, train_op, dev, progress, writer, model_dir, stop, data_path, label_offset,
                  num_classes, validation):
    """The loop, with input-pipeline failures explained as one DatasetError."""
    log_every = dev.round_to_loop(training_policy.log_interval(FLAGS.log_every_n_steps, progress.total_steps),
                                  "log_every_n_steps")
    save_every = dev.round_to_loop(FLAGS.save_checkpoints_steps, "save_checkpoints_steps")
    input_errors = functools.partial(pipeline_errors.explained, data_path, "train", label_offset,
                                     num_classes)
    return loop.train_loop(sess, graph, train_op, dev.is_chief, progress, writer, model_dir, stop, log_every,
                       save_every, validation, input_errors)


def train():
    start_time = time.time()
    _check_flags()
    dev = device.resolve(training=True)
    logging.info("device: %s", dev.describe())
    model_dir = checked_folder(FLAGS.TMP_MODEL_PATH, "TMP_MODEL_PATH")
    checked_folder(FLAGS.TMP_LOG_PATH, "TMP_LOG_PATH")
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


def _validation_interval(dev, info, steps_per_epoch, total_steps):
    """(steps between in-training validations, 0 = none; whether there are validation records); a conflict
    with --early_stopping_patience is an error here, before anything is written."""
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
    return interval, bool(validation_images)


def _validation(dev, model_dir, info, graph, settings, steps_per_epoch, total_steps, start_step, interval,
                has_records):
    """The in-training Validation the flags ask for (chief only), or None."""
    if interval == 0 or not dev.is_chief:
        logging.info("no validation during training (%s)", "see --eval_every_n_epochs" if has_records
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
    latest = resume.resume_checkpoint(model_dir)
    weights_prefix = _pretrained_prefix(FLAGS.TMP_WEIGHTS_PATH)
    recorded = run_config.read(model_dir)
    model_name = (FLAGS.model_name or recorded.get("model_name")
                  or (latest and checkpoint_reader.checkpoint_model_name(latest))
                  or (weights_prefix and checkpoint_reader.checkpoint_model_name(weights_prefix)) or "efficientnet-b0")
    info = preprocess.read_dataset_info(FLAGS.TMP_DATA_PATH)
    train_files = preprocess.find_record_files(FLAGS.TMP_DATA_PATH, "train")
    num_classes = _num_classes(info)
    if latest:
        resume.check_resume_fits(latest, model_dir, model_name, num_classes,
                                 "--num_classes=%d" % FLAGS.num_classes if FLAGS.num_classes
                                 else "the data in %s" % FLAGS.TMP_DATA_PATH)
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
    interval, has_validation_records = _validation_interval(dev, info, steps_per_epoch, total_steps)
    if interval and dev.is_chief:
        training_policy.read_history(model_dir, 0)  # a damaged history is an error before anything is written
    if dev.is_chief:
        resume.remove_partial_saves(model_dir, model_dir)
        resume.remove_partial_saves(os.path.join(model_dir, training_policy.BEST_DIR), model_dir)

    if FLAGS.seed is not None:
        tf.set_random_seed(FLAGS.seed + dev.rank_id)
    graph = TrainGraph(dev, model_dir, model_name, num_classes, image_size, steps_per_epoch, total_steps,
                       info["label_offset"])
    # Rank 0 alone writes summaries, run_config.json, checkpoints and the final-result lines.
    writer = tf.summary.FileWriter(FLAGS.TMP_LOG_PATH) if dev.is_chief else None
    with tf.Session(config=dev.session_config()) as sess:
        logging.info(resume.restore_or_initialize(sess, graph, latest, model_dir, weights_prefix,
                                                   cli.weights_variant()))
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
                                 progress.mark_step, interval, has_validation_records)
        if validation is not None and latest:
            progress.pause(validation.catch_up(sess, latest, progress.mark_step, total_steps))
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


ERRORS = (TrainingError, preprocess.DatasetError, checkpoint_reader.CheckpointError, device.DeviceError,
          checkpoint_writer.CheckpointSaveError, checkpoint_writer.LockError, run_config.RunConfigError,
          common_flags.FlagError, training_policy.HistoryError)
# Ctrl-C before the stop signals are in place (or a second one): nothing is saved.
INTERRUPTED = ("interrupted: stopped at once, nothing new saved (the checkpoints on disk are kept); run the same "
               "command again to resume")


def main(argv):
    del argv  # none: cli.run refuses positional arguments
    cli.weights_variant()  # a deprecated alias warns here, at the start
    try:
        if FLAGS.is_training:
            train()
        else:
            evaluation.main_from_flags()
    except checkpoint_writer.Interrupted as stopped:  # saved after the step: exit 143 (SIGTERM) or 130
        cli.interrupted(stopped, stopped.exit_code)


if __name__ == "__main__":
    cli.run(main, ERRORS, define_flags, interrupted_message=INTERRUPTED)
