"""Issue 13: never lose a checkpoint, never report a wrong number.

In-process tests on tiny graphs for the mechanisms (checkpoint resolution, the checked saver with
retention, the lock, stop signals, label checks, damaged records, make_tfrecords staging); the
command-line behaviour is in test_fault_injection.py."""
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import freeze_graph
import preprocess
from conftest import DEMO_DATA, device_flags, run_python, saved_checkpoint_steps
from effnet.checkpoints import checkpoint_reader, checkpoint_writer, run_config
from effnet.data import photo_records, pipeline_errors
from effnet.devices import device
from effnet.evaluation import evaluation
from effnet.training import loop
from effnet.training.errors import TrainingError
from effnet.training.progress import ProgressLog


class TinyModel(object):
    """A graph with two weights and a global step, saved by a CheckpointSaver into model_dir."""

    def __init__(self, model_dir, keep_checkpoint_max=3):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.weight = tf.Variable(np.ones([64, 64], np.float32), name="weight")
            self.bias = tf.Variable(np.zeros([64], np.float32), name="bias")
            self.global_step = tf.train.get_or_create_global_step()
            self.value = tf.placeholder(tf.float32, [])
            self.set_weight = tf.assign(self.weight, tf.fill([64, 64], self.value))
            self.step_to = tf.placeholder(tf.int64, [])
            self.set_step = tf.assign(self.global_step, self.step_to)
            self.saver = checkpoint_writer.CheckpointSaver(str(model_dir), keep_checkpoint_max, self.global_step,
                                                       [self.weight, self.bias])
            self.sess = tf.Session(graph=self.graph)
            self.sess.run(tf.global_variables_initializer())

    def save_at(self, step, weight=1.0):
        self.sess.run([self.set_step, self.set_weight], {self.step_to: step, self.value: weight})
        return self.saver.save(self.sess)


@pytest.fixture
def two_checkpoints(tmp_path):
    """model/ with model.ckpt-10 and model.ckpt-20 written by the checked saver."""
    model = TinyModel(tmp_path / "model")
    model.save_at(10)
    model.save_at(20)
    return tmp_path / "model"


# Defects 1, 2, 6: the newest intact checkpoint inside the folder given, whatever the state file says.
@pytest.mark.parametrize("damage", ["remove_index", "remove_all", "truncate_data", "empty_index"])
def test_resolve_skips_a_damaged_newest_checkpoint(two_checkpoints, damage, caplog):
    newest = str(two_checkpoints / "model.ckpt-20")
    data = newest + ".data-00000-of-00001"
    if damage == "remove_index":
        os.remove(newest + ".index")
    elif damage == "remove_all":
        os.remove(newest + ".index")
        os.remove(data)
    elif damage == "truncate_data":
        with open(data, "r+b") as handle:
            handle.truncate(os.path.getsize(data) // 2)
    else:
        open(newest + ".index", "w").close()
    (two_checkpoints / "checkpoint").write_text("")  # a zero-byte state file is ignored too
    assert checkpoint_reader.resolve_checkpoint(str(two_checkpoints)) == str(two_checkpoints / "model.ckpt-10")
    if damage != "remove_all":
        assert "model.ckpt-20" in caplog.text and "skipping damaged" in caplog.text
        with pytest.raises(checkpoint_reader.CheckpointError,
                           match=r"model.ckpt-20 is damaged.*newest intact checkpoint beside it is .*model.ckpt-10"):
            checkpoint_reader.resolve_checkpoint(newest)


def test_copied_and_moved_folders_use_their_own_checkpoints(two_checkpoints, tmp_path):
    state = (two_checkpoints / "checkpoint").read_text()
    assert '"model.ckpt-20"' in state and str(tmp_path) not in state, "relative paths in the state file"
    # A state file of the older TensorFlow kind, with absolute paths into the original folder.
    (two_checkpoints / "checkpoint").write_text('model_checkpoint_path: "%s/model.ckpt-20"\n' % two_checkpoints)
    copy = tmp_path / "copy"
    shutil.copytree(str(two_checkpoints), str(copy))
    os.remove(str(copy / "model.ckpt-20.index"))
    assert checkpoint_reader.resolve_checkpoint(str(copy)) == str(copy / "model.ckpt-10")
    moved = tmp_path / "moved"
    os.rename(str(two_checkpoints), str(moved))
    assert checkpoint_reader.resolve_checkpoint(str(moved)) == str(moved / "model.ckpt-20")
    # freeze_graph writes its .pb beside the checkpoint it resolved, i.e. into the folder given.
    assert os.path.dirname(checkpoint_reader.resolve_checkpoint(str(copy))) == str(copy)


def test_folder_with_only_damaged_checkpoints_names_them(two_checkpoints):
    for name in ("model.ckpt-10.index", "model.ckpt-20.index"):
        os.remove(str(two_checkpoints / name))
    with pytest.raises(checkpoint_reader.CheckpointError,
                       match=r"no intact checkpoint.*model.ckpt-20 \(model.ckpt-20.index is missing\)"):
        checkpoint_reader.resolve_checkpoint(str(two_checkpoints))


def test_checksum_damage_found_at_restore_is_one_error(two_checkpoints):
    data = str(two_checkpoints / "model.ckpt-20.data-00000-of-00001")
    content = bytearray(open(data, "rb").read())
    content[100:110] = b"xxxxxxxxxx"  # same size, so only the checksums can tell
    open(data, "wb").write(bytes(content))
    model = TinyModel(two_checkpoints)
    with pytest.raises(checkpoint_reader.CheckpointError,
                       match=r"model.ckpt-20 is damaged \(Checksum does not match.*\); move it away .*model.ckpt-10"):
        model.saver.restore(model.sess, str(two_checkpoints / "model.ckpt-20"))


def test_official_checkpoint_counts_as_intact(fixture_dir):
    assert checkpoint_reader.checkpoint_problem(os.path.join(fixture_dir, "ckpt", "model.ckpt-3")) is None


# Defects 9, 11: the checked saver.
def test_saver_never_writes_diverged_weights(tmp_path):
    model = TinyModel(tmp_path / "model")
    good = model.save_at(3)
    for weight, reason in ((np.nan, "holds inf or nan"), (5e11, r"reached \|w\| = 5e\+11")):
        with pytest.raises(checkpoint_writer.CheckpointSaveError,
                           match=r"step 4 not saved: weight weight %s.*last good checkpoint is %s"
                                 % (reason, good)):
            model.save_at(4, weight)
    assert saved_checkpoint_steps(tmp_path / "model") == [3]


def test_saver_judges_a_batch_norm_variance_by_its_square_root(tmp_path):
    """A moving variance holds squared activations: 9e6 (activations of 3e3, seen in a healthy short
    run from scratch) is saved; 1e13 (activations of 3e6) is divergence."""
    with tf.Graph().as_default():
        variance = tf.Variable(np.full([8], 9e6, np.float32), name="bn/moving_variance")
        saver = checkpoint_writer.CheckpointSaver(str(tmp_path / "model"), 3, tf.train.get_or_create_global_step(),
                                              [variance])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            assert saver.save(sess) == str(tmp_path / "model" / "model.ckpt-0")
            sess.run(tf.assign(variance, tf.fill([8], 1e13)))
            with pytest.raises(checkpoint_writer.CheckpointSaveError,
                               match=r"weight bn/moving_variance reached sqrt\|w\| = 3.16e\+06"):
                saver.save(sess)


def test_saver_names_by_global_step_and_counts_retention_on_disk(tmp_path):
    folder = tmp_path / "model"
    earlier = TinyModel(folder, keep_checkpoint_max=10)
    for step in range(1, 8):  # an earlier run with a larger keep_checkpoint_max, interrupted
        earlier.save_at(step)
    (folder / "best.ckpt.index").write_bytes((folder / "model.ckpt-1.index").read_bytes())
    model = TinyModel(folder, keep_checkpoint_max=3)
    assert model.save_at(8) == str(folder / "model.ckpt-8")
    assert saved_checkpoint_steps(folder) == [6, 7, 8]
    assert (folder / "best.ckpt.index").exists(), "checkpoints of other names are left alone"
    state = tf.train.get_checkpoint_state(str(folder))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["model.ckpt-%d" % s for s in (6, 7, 8)]
    # A damaged newer checkpoint (skipped when resuming) is not counted and not deleted before it is reached.
    os.remove(str(folder / "model.ckpt-8.index"))
    TinyModel(folder, keep_checkpoint_max=2).save_at(7)
    assert saved_checkpoint_steps(folder) == [6, 7, 8]


def test_saver_turns_a_failed_write_into_one_error(tmp_path):
    model = TinyModel(tmp_path / "model")
    good = model.save_at(1)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))  # the 16 KB weight does not fit: like a full disk
    try:
        with pytest.raises(checkpoint_writer.CheckpointSaveError,
                           match=r"cannot write checkpoint step 2 .*last good checkpoint is %s" % good):
            model.save_at(2)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert sorted(os.listdir(str(tmp_path / "model"))) == [
        "checkpoint", "model.ckpt-1.data-00000-of-00001", "model.ckpt-1.index"], "no partial files left"


# Defects 4, 9: the training loop saves on a stop request under the step it holds, and names the last
# good checkpoint when the loss turns non-finite.
class _StopAtStep(object):
    """A stop request (as StopSignals records one) that arrives once the global step reaches `step`."""

    def __init__(self, model, step):
        self.model, self.step = model, step

    @property
    def signum(self):
        return signal.SIGTERM if self.model.sess.run(self.model.global_step) >= self.step else None


def _loop(model, tmp_path, stop_at=None, nan_from=None, total=10):
    with model.graph.as_default():
        train_op = tf.assign_add(model.global_step, 1)
        with tf.control_dependencies([train_op]):
            step = model.global_step.read_value()
            loss = tf.where(step >= (nan_from or total + 1), np.nan, 1.0)
        graph = types.SimpleNamespace(loss=loss, accuracy=tf.constant(0.5), learning_rate=tf.constant(0.1),
                                      global_step=model.global_step, saver=model.saver)
    progress = ProgressLog(total, 10.0, 8, 0)
    writer = types.SimpleNamespace(add_summary=lambda *args: None)
    stop = _StopAtStep(model, stop_at or total + 1)
    return loop.train_loop(model.sess, graph, train_op, True, progress, writer, str(tmp_path / "model"), stop,
                             log_every=1, save_every=2)


def test_loop_saves_on_a_stop_request_under_the_step_it_holds(tmp_path):
    model = TinyModel(tmp_path / "model")
    with pytest.raises(checkpoint_writer.Interrupted) as stopped:
        _loop(model, tmp_path, stop_at=3)
    assert (stopped.value.signum, stopped.value.step) == (signal.SIGTERM, 3)
    assert stopped.value.prefix == str(tmp_path / "model" / "model.ckpt-3")
    assert tf.train.NewCheckpointReader(stopped.value.prefix).get_tensor("global_step") == 3
    assert saved_checkpoint_steps(tmp_path / "model") == [2, 3]


def test_loop_names_the_last_good_checkpoint_on_a_non_finite_loss(tmp_path):
    model = TinyModel(tmp_path / "model")
    with pytest.raises(TrainingError, match=r"loss is nan at step 5: lower --learning_rate; the last good "
                                                  r"checkpoint is .*model.ckpt-4 \(resuming starts there\)"):
        _loop(model, tmp_path, nan_from=5)
    assert saved_checkpoint_steps(tmp_path / "model") == [2, 4]


# Defect 10: the lock.
def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    lock_path = tmp_path / checkpoint_writer.LOCK_FILE
    # The holder lives until it is killed (not for a time that a loaded machine could outlast), and the lock
    # names its start time, as a real one does, so that a reused pid is not taken for it.
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        lock_path.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": "noon",
                                         "start_time": checkpoint_writer._process_start_time(other.pid)}))
        with pytest.raises(checkpoint_writer.LockError, match=r"in use by another training run \(pid %d" % other.pid):
            checkpoint_writer.ModelFolderLock(str(tmp_path)).acquire()
    finally:
        other.kill()
        other.wait()
    with checkpoint_writer.ModelFolderLock(str(tmp_path)):  # the holder is gone: taken over
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert not lock_path.exists()
    lock_path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "noon"}))
    with pytest.raises(checkpoint_writer.LockError, match="on host elsewhere.*delete %s" % lock_path):
        checkpoint_writer.ModelFolderLock(str(tmp_path)).acquire()


def test_stop_signals_record_the_first_and_stop_on_the_second():
    with checkpoint_writer.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    text = str(checkpoint_writer.Interrupted(signal.SIGINT, 7, "/m/model.ckpt-7"))
    assert text.startswith("interrupted by SIGINT: saved step 7 as /m/model.ckpt-7")
    assert checkpoint_writer.Interrupted(signal.SIGTERM, 7, None).exit_code == 143


# Defects 3, 5, 12: every record's label is checked; damaged records are named.
def _read_all(dataset):
    labels = []
    with tf.Graph().as_default():
        batch = tf.data.make_one_shot_iterator(dataset()).get_next()
        with tf.Session() as sess:
            while True:
                try:
                    labels.extend(sess.run(batch)[1])
                except tf.errors.OutOfRangeError:
                    return labels


def _pipeline_error(data_path, split, num_classes, label_offset=None):
    info = preprocess.read_dataset_info(str(data_path))
    offset = info["label_offset"] if label_offset is None else label_offset
    with pytest.raises(tf.errors.OpError) as caught:
        with tf.Graph().as_default():
            dataset = preprocess.build_dataset(str(data_path), split == "train", 32, 8, label_offset=offset,
                                               num_classes=num_classes)
            batch = tf.data.make_one_shot_iterator(dataset).get_next()
            with tf.Session() as sess:
                for _ in range(60):
                    sess.run(batch)
    explained = pipeline_errors.explain(caught.value, str(data_path), split, offset, num_classes)
    assert isinstance(explained, preprocess.DatasetError), caught.value.message
    return str(explained)


def _write_records(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for features in examples:
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def _demo_examples(count):
    record_file = os.path.join(DEMO_DATA, "validation-00000-of-00001")
    return [tf.train.Example.FromString(r).features.feature
            for r, _ in zip(tf.python_io.tf_record_iterator(record_file), range(count))]


def test_labels_outside_the_class_count_stop_training(tmp_path):
    data = tmp_path / "five"
    shutil.copytree(DEMO_DATA, str(data))
    info = json.loads((data / "dataset_info.json").read_text())
    (data / "dataset_info.json").write_text(json.dumps(dict(info, num_classes=5)))
    message = _pipeline_error(data, "train", 5)
    assert "train-0000" in message and "outside [0, 5)" in message and "num_classes" in message


def test_zero_based_records_without_dataset_info_are_an_error_not_padding(tmp_path, fixture_dir):
    data = tmp_path / "no_info"
    data.mkdir()
    shutil.copy(os.path.join(DEMO_DATA, "validation-00000-of-00001"), str(data))
    with pytest.raises(preprocess.DatasetError,
                       match=r"stores label 0, which with label_offset 1 is class -1, outside \[0, 1000\): "
                             r"there is no dataset_info.json"):
        evaluation.evaluate(str(data), os.path.join(fixture_dir, "ckpt"), 100, image_size=32,
                            dev=device.for_name("cpu", device_flags()))
    # With the info every real image is counted: 359, none taken for padding.
    labels = _read_all(lambda: preprocess.build_dataset(DEMO_DATA, False, 32, 100, num_classes=10))
    assert sum(1 for label in labels if label != preprocess.PADDING_LABEL) == 359


def test_bad_data_path_is_named_by_test_py_before_the_class_count(tmp_path, fixture_dir):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "train_only").mkdir()
    shutil.copy(os.path.join(DEMO_DATA, "train-00000-of-00002"), str(tmp_path / "train_only"))
    for path, fragment in ((tmp_path / "missing", "does not exist"), (tmp_path / "a_file", "not a folder"),
                           (tmp_path / "train_only", "no validation records")):
        with pytest.raises(preprocess.DatasetError, match=fragment):
            evaluation.evaluate(str(path), os.path.join(fixture_dir, "ckpt"), 8)


def test_records_with_other_feature_keys(tmp_path):
    _write_records(tmp_path / "validation-00000-of-00001", [
        {"image/encoded": f["image/encoded"], "image/label": f["image/class/label"]} for f in _demo_examples(3)])
    message = _pipeline_error(tmp_path, "validation", 10, label_offset=0)
    assert "have no image/class/label feature" in message and "outside" not in message


def test_undecodable_image_is_named_by_shard_and_record(tmp_path):
    examples = _demo_examples(4)
    examples[2]["image/encoded"].bytes_list.value[0] = b"\xff\xd8\xff not really a jpeg"
    _write_records(tmp_path / "validation-00000-of-00001", examples)
    message = _pipeline_error(tmp_path, "validation", 10, label_offset=0)
    assert "record 2 of %s" % (tmp_path / "validation-00000-of-00001") in message
    assert "cannot be decoded" in message


# Defect 8: make_tfrecords converts into a staging folder and replaces the old records only on success.
def test_failed_conversion_keeps_the_old_records(tmp_path):
    photos = tmp_path / "photos"
    for name in ("cat", "dog"):
        (photos / name).mkdir(parents=True)
        for index in range(4):
            (photos / name / ("%d.jpg" % index)).write_bytes(b"not an image")
    output = tmp_path / "records"
    output.mkdir()
    (output / "train-00000-of-00001").write_bytes(b"old records")
    with pytest.raises(photo_records.RecordsConversionError,
                       match=r"class folder\(s\) cat, dog have no readable image"):
        photo_records.convert(str(photos), str(output), overwrite=True, num_workers=1)
    assert sorted(os.listdir(str(output))) == ["train-00000-of-00001"]
    assert (output / "train-00000-of-00001").read_bytes() == b"old records"


# Defects 13, 14: deployed folders carry their labels; quoted ATC paths.
def test_model_folder_carries_its_labels(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    copy = run_config.copy_labels(str(model), os.path.join(DEMO_DATA, "labels.txt"))
    run_config.write(str(model), labels_file=os.path.join(DEMO_DATA, "labels.txt"))
    deployed = tmp_path / "deployed"
    shutil.copytree(str(model), str(deployed))
    assert run_config.labels_file(str(deployed / "model.ckpt-5")) == str(deployed / "labels.txt")
    os.remove(str(deployed / "labels.txt"))
    run_config.write(str(deployed), labels_file=str(tmp_path / "gone" / "labels.txt"))
    assert run_config.labels_file(str(deployed)) is None
    assert open(copy).read() == open(os.path.join(DEMO_DATA, "labels.txt")).read()


def test_atc_command_quotes_paths_with_spaces():
    command = freeze_graph.atc_command("/my models/b0.pb", 224, 1, aipp_path="/my models/b0_aipp.cfg")
    words = shlex.split(command)
    assert "--model=/my models/b0.pb" in words and "--output=/my models/b0" in words
    assert "--insert_op_conf=/my models/b0_aipp.cfg" in words


def test_bad_flags_and_folders_are_one_line_each(tmp_path):
    log_file = tmp_path / "log_file"
    log_file.write_text("not a folder")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "model.ckpt-20.data-00000-of-00001").write_bytes(b"weights whose index was lost")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / checkpoint_writer.LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    common = ["train.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_WEIGHTS_PATH=",
              "--TMP_LOG_PATH=%s" % (tmp_path / "log")]
    cases = [
        (["--TMP_MODEL_PATH=%s" % damaged], ["holds checkpoint files but no intact checkpoint"]),
        (["--TMP_MODEL_PATH=%s" % locked], ["in use by another training run (pid %d" % os.getpid()]),
        (["--image_size=-5", "--min_crop_area=0", "--epochs=0", "--TMP_MODEL_PATH=%s" % (tmp_path / "a")],
         ["--image_size=-5", "--min_crop_area=0", "--epochs=0"]),
        (["--TMP_MODEL_PATH=%s" % (tmp_path / "b"), "--TMP_LOG_PATH=%s" % log_file], ["TMP_LOG_PATH", "is a file"]),
        (["--TMP_MODEL_PATH=%s" % (log_file / "model")], ["cannot create TMP_MODEL_PATH"]),
    ]
    for flags, fragments in cases:
        result = run_python(common + flags)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if "error: " in line or line.startswith("E")]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
        for fragment in fragments:
            assert fragment in errors[0], errors[0]
        assert "--data_path" not in result.stderr
    assert sorted(os.listdir(str(damaged))) == ["model.ckpt-20.data-00000-of-00001"], "never trained from scratch"
    assert os.listdir(str(locked)) == [checkpoint_writer.LOCK_FILE]
