"""Issue 23: a damaged run record, a validation cut short, another class count at resume, tiny images,
Ctrl-C in make_tfrecords and misleading messages. Each case failed on 60dea45.

One short training run (module fixture: Lite0 at 32 px on the demo digits, 4 steps, validated at step 4)
gives the model folder the end-to-end cases copy and damage; the rest runs in-process on small inputs."""
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile

import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import preprocess
from conftest import DEMO_DATA, REPO_ROOT, device_flags, python_env, run_python
from effnet.checkpoints import checkpoint_reader, run_config
from effnet.data import photo_records, pipeline_errors
from effnet.devices import device
from effnet.evaluation import evaluation
from effnet.training import resume, training_policy
from effnet.training.errors import TrainingError
from effnet.weights import weight_readers

STEPS = 4


def _train_args(model_dir, *extra):
    return ["train.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_dir,
            "--TMP_LOG_PATH=%s_log" % model_dir, "--TMP_WEIGHTS_PATH=", "--model_name=efficientnet-lite0",
            "--image_size=32", "--batch_size=32", "--optimizer=sgd", "--moving_average_decay=0",
            "--max_steps=%d" % STEPS, "--save_checkpoints_steps=2", "--eval_every_n_steps=%d" % STEPS,
            "--keep_checkpoint_max=2"] + list(extra)


def _error_line(result):
    """The one 'error: ' line of a failed run (asserting there is exactly one and no traceback)."""
    assert result.returncode not in (0, None), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model folder after a 4-step run validated at step 4: model.ckpt-2, model.ckpt-4, the history
    [step 4], best/ (step 4), run_config.json and labels.txt."""
    model_dir = str(tmp_path_factory.mktemp("round3") / "model")
    result = run_python(_train_args(model_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [entry["step"] for entry in training_policy.read_history(model_dir, STEPS)] == [STEPS]
    return model_dir


@pytest.fixture
def model_copy(trained, tmp_path):
    copy = str(tmp_path / "model")
    shutil.copytree(trained, copy)
    return copy


# 1. A damaged run record stops every tool with one line naming it; it is never read as "no record".
def test_damaged_run_record_is_one_line_naming_it(model_copy, tmp_path):
    record = os.path.join(model_copy, run_config.RUN_CONFIG_FILE)
    settings = json.loads(open(record).read())
    cases = [("{not json", "is damaged"),
             (json.dumps(dict(settings, image_size="abc")), "image_size 'abc' is not a positive whole number"),
             (json.dumps(dict(settings, model_name="efficientnet-b99")), "'efficientnet-b99' is not a known model"),
             (json.dumps([1, 2]), "not a JSON object")]
    for text, fragment in cases:
        with open(record, "w") as handle:
            handle.write(text)
        with pytest.raises(run_config.RunConfigError, match=re.escape(fragment)):
            run_config.read(model_copy)
    with open(record, "w") as handle:
        handle.write('{"image_size": 32, "model_name": "efficientnet-lite0",')  # cut short by a full disk
    image = os.path.join(tmp_path, "digit.png")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    runs = {
        "test.py": run_python(["test.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_copy]),
        "predict.py": run_python(["predict.py", "--checkpoint=%s" % model_copy, image]),
        "train.py": run_python(_train_args(model_copy, "--max_steps=6")),
    }
    for tool, result in runs.items():
        if tool == "predict.py":  # predict.py prints its errors without absl's sys.exit
            assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
            line = [text for text in result.stderr.splitlines() if text.startswith("error: ")][-1]
        else:
            line = _error_line(result)
        assert record in line and "is damaged" in line, (tool, line)
        assert "Top-1" not in result.stdout
    assert os.path.exists(os.path.join(model_copy, "model.ckpt-4.index"))
    assert not os.path.exists(os.path.join(model_copy, "model.ckpt-6.index")), "train.py must not go on"
    # Wrong types through test.py and train.py: one line, no traceback.
    with open(record, "w") as handle:
        json.dump(dict(settings, image_size="abc"), handle)
    line = _error_line(run_python(["test.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_copy]))
    assert "image_size 'abc'" in line


# 3. A validation cut short by a crash is redone at resume; partial files of the cut-short best/ save go.
def _history_steps(model_dir):
    return [entry["step"] for entry in training_policy.read_history(model_dir, 10 ** 9)]


def _best_step(model_dir):
    best_dir = os.path.join(model_dir, training_policy.BEST_DIR)
    prefix, damaged = checkpoint_reader.newest_intact_checkpoint(best_dir)
    assert not damaged
    return checkpoint_reader.checkpoint_step(prefix) if prefix else None


def test_validation_killed_during_the_best_save_is_redone_at_resume(model_copy):
    # What kill -9 while best/ is written leaves: step 4 saved, its validation not in the history, a partial
    # data file and TensorFlow's temporary folder in best/, no checkpoint there.
    best_dir = os.path.join(model_copy, training_policy.BEST_DIR)
    shutil.rmtree(best_dir)
    os.makedirs(os.path.join(best_dir, "model.ckpt-4_temp_0123abcd"))
    partial = os.path.join(best_dir, "model.ckpt-4.data-00000-of-00001.tempstate8473529461")
    with open(partial, "wb") as handle:
        handle.write(os.urandom(2048))
    training_policy.write_history(model_copy, [])
    result = run_python(_train_args(model_copy))  # the same command again
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the validation of step 4 was cut short: redoing it" in result.stderr
    assert _history_steps(model_copy) == [4]
    assert _best_step(model_copy) == 4
    assert run_config.read(best_dir)["best_step"] == 4
    assert sorted(name for name in os.listdir(best_dir) if "temp" in name) == []


def test_failed_best_save_keeps_the_validation_and_names_what_was_saved(model_copy):
    best_dir = os.path.join(model_copy, training_policy.BEST_DIR)
    shutil.rmtree(best_dir)
    training_policy.write_history(model_copy, [])
    # A deterministic write failure inside best/: TensorFlow cannot move the index into place.
    os.makedirs(os.path.join(best_dir, "model.ckpt-4.index"))
    line = _error_line(run_python(_train_args(model_copy)))
    assert "validation of step 4 done" in line and "recorded in validation_history.json" in line, line
    assert "%s could not be written" % best_dir in line, line
    assert "%s is saved and intact" % os.path.join(model_copy, "model.ckpt-4") in line, line
    assert "no good checkpoint" not in line
    assert _history_steps(model_copy) == [4]
    # Once the folder is fixed, the same command writes best/ from the recorded validation, without redoing it.
    os.rmdir(os.path.join(best_dir, "model.ckpt-4.index"))
    result = run_python(_train_args(model_copy))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best/ lacks the best validation (step 4" in result.stderr
    assert "redoing it" not in result.stderr
    assert _history_steps(model_copy) == [4] and _best_step(model_copy) == 4


def test_best_is_replaced_only_by_a_better_validation_when_the_history_is_gone(model_copy):
    best_dir = os.path.join(model_copy, training_policy.BEST_DIR)
    run_config.write(best_dir, **dict(run_config.read(best_dir), best_top1=1.0))  # nothing can beat it
    os.remove(os.path.join(model_copy, training_policy.HISTORY_FILE))
    result = run_python(_train_args(model_copy, "--max_steps=6", "--eval_every_n_steps=6"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert _history_steps(model_copy) == [6]
    assert _best_step(model_copy) == 4, "best/ (top1 1.0) was replaced by a worse validation"
    with open(os.path.join(model_copy, training_policy.HISTORY_FILE), "w") as handle:
        handle.write('[{"step": 6, "top1": 0.1')  # cut short
    line = _error_line(run_python(_train_args(model_copy, "--max_steps=8", "--eval_every_n_steps=8")))
    assert "validation_history.json is damaged" in line
    assert _best_step(model_copy) == 4 and not os.path.exists(os.path.join(model_copy, "model.ckpt-8.index"))


# 4. Another class count at resume is refused before building, with what to do.
def test_resume_with_another_class_count_says_so_before_building(model_copy):
    before = sorted(os.listdir(model_copy))
    line = _error_line(run_python(_train_args(model_copy, "--num_classes=12", "--max_steps=6")))
    assert "the class count differs from the checkpoint's" in line, line
    assert "10-class checkpoint (model.ckpt-4)" in line and "12 classes (--num_classes=12)" in line, line
    assert "new TMP_MODEL_PATH" in line and "--TMP_WEIGHTS_PATH=%s" % model_copy in line, line
    assert sorted(os.listdir(model_copy)) == before
    line = _error_line(run_python(_train_args(model_copy, "--model_name=efficientnet-b0", "--max_steps=6")))
    assert "holds efficientnet-lite0 checkpoints" in line and "new TMP_MODEL_PATH" in line, line


# 5. Tiny images: make_tfrecords skips them with a counted warning listing them; the pipeline names the record.
def _photos(root, sizes):
    """root/<class>/<n>.png of the given (width, height) sizes, two classes."""
    for name in ("cat", "dog"):
        os.makedirs(os.path.join(root, name))
        for index, size in enumerate(sizes):
            Image.new("RGB", size, (index * 20, 100, 200 if name == "cat" else 0)).save(
                os.path.join(root, name, "%d.png" % index))


def test_make_tfrecords_skips_images_too_small_and_lists_them(tmp_path):
    photos = str(tmp_path / "photos")
    _photos(photos, [(24, 20)] * 4 + [(1, 1), (40, 3)])
    output = str(tmp_path / "records")
    result = run_python(["make_tfrecords.py", "--input_dir=%s" % photos, "--output_dir=%s" % output,
                         "--validation_fraction=0.25", "--num_workers=1"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote 6 train and 2 validation images of 2 classes" in result.stdout
    small = [os.path.join(photos, name, "%d.png" % index) for name in ("cat", "dog") for index in (4, 5)]
    line = [text for text in result.stdout.splitlines() if text.startswith("skipped")]
    assert line == ["skipped 4 images smaller than 8x8 pixels: %s" % ", ".join(small)], result.stdout
    info = preprocess.read_dataset_info(output)
    assert info["num_examples"] == {"train": 6, "validation": 2}
    sizes = set()
    for path in preprocess.find_record_files(output, "train") + preprocess.find_record_files(output, "validation"):
        for record in tf.python_io.tf_record_iterator(path):
            feature = tf.train.Example.FromString(record).features.feature
            sizes.add((feature["image/width"].int64_list.value[0], feature["image/height"].int64_list.value[0]))
    assert sizes == {(24, 20)}
    with pytest.raises(photo_records.RecordsConversionError, match="min_image_side must be >= 2"):
        photo_records.convert(photos, str(tmp_path / "other"), min_image_side=1)


def _record(image_bytes, label):
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()


def _encoded(size, image_format):
    output = io.BytesIO()
    Image.new("RGB", size, (90, 30, 200)).save(output, image_format)
    return output.getvalue()


def _first_pipeline_error(data_path, is_training):
    with tf.Graph().as_default():
        dataset = preprocess.build_dataset(data_path, is_training, 32, 2, label_offset=0, num_classes=2)
        batch = tf.data.make_one_shot_iterator(dataset).get_next()
        with tf.Session() as sess:
            with pytest.raises(tf.errors.InvalidArgumentError) as caught:
                for _ in range(20):
                    sess.run(batch)
    return caught.value


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_pipeline_names_the_record_of_an_image_too_small_to_crop(tmp_path, image_format):
    data = str(tmp_path)
    for split in ("train", "validation"):
        with tf.io.TFRecordWriter(os.path.join(data, "%s-00000-of-00001" % split)) as writer:
            for index in range(5):
                writer.write(_record(_encoded((1, 1) if index == 3 else (16, 12), image_format), index % 2))
    for split in ("train", "validation"):
        error = _first_pipeline_error(data, split == "train")
        assert pipeline_errors.failing_op(error) == preprocess.SIZE_CHECK_OP
        message = str(pipeline_errors.explain(error, data, split, 0, 2))
        assert message.startswith("record 3 of %s holds a 1x1 image, too small to crop" %
                                  os.path.join(data, "%s-00000-of-00001" % split)), message
        assert "--min_image_side" in message


def test_errors_of_other_ops_are_not_taken_for_input_errors(tmp_path):
    # A model op whose message speaks of images and crops: no explanation, and no scan of the records.
    with tf.io.TFRecordWriter(str(tmp_path / "validation-00000-of-00001")) as writer:
        writer.write(_record(b"not an image", 0))
    error = tf.errors.InvalidArgumentError(
        None, None, "image crop size mismatch: decode buffer [[{{node efficientnet-b0/stem/conv2d/Conv2D}}]]")
    assert pipeline_errors.failing_op(error) is None
    assert pipeline_errors.explain(error, str(tmp_path), "validation", 0, 2) is None
    # The decode op itself is explained, with the record found by the scan.
    decode = _first_pipeline_error(str(tmp_path), False)
    assert pipeline_errors.failing_op(decode) == preprocess.DECODE_OP
    message = str(pipeline_errors.explain(decode, str(tmp_path), "validation", 0, 2))
    assert message.startswith("record 0 of %s holds an image that cannot be decoded" %
                              (tmp_path / "validation-00000-of-00001")), message


# 6. Ctrl-C in make_tfrecords: one line, exit 130, the workers stop, the old records stay.
def test_cancelled_shard_writer_converts_no_more_images(tmp_path):
    photos = str(tmp_path / "photos")
    _photos(photos, [(24, 20)] * 3)
    examples = [(os.path.join(photos, "cat", "%d.png" % i), 0, "cat") for i in range(3)]
    cancelled = threading.Event()
    cancelled.set()
    written, unreadable, too_small = photo_records._write_shard(str(tmp_path / "shard"), examples, photos,
                                                                 cancelled=cancelled)
    assert (written, unreadable, too_small) == (0, [], [])
    assert photo_records._write_shard(str(tmp_path / "shard"), examples, photos)[0] == 3


PHOTOS_PER_CLASS_TO_INTERRUPT = 200


def _ctrl_c_as_in_a_terminal():
    """SIGINT back to its default in the child, as in a terminal: a shell starting a job in the background (as
    CI starts the suite) ignores SIGINT there, children inherit that, and Python then installs no
    KeyboardInterrupt handler, so the signal would be ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_during_make_tfrecords_stops_with_one_line_and_keeps_the_old_records(tmp_path):
    photos = tmp_path / "photos"
    for name in ("cat", "dog"):
        (photos / name).mkdir(parents=True)
    # Large flat PNGs: small on disk, each a large decode and JPEG encode. The first progress line comes after a
    # tenth of them and the other nine tenths take about 30 s, far more than the signal ever took to arrive.
    Image.new("RGB", (3000, 3000), (10, 200, 30)).save(str(photos / "cat" / "0.png"))
    for name in ("cat", "dog"):
        for index in range(PHOTOS_PER_CLASS_TO_INTERRUPT):
            if (name, index) != ("cat", 0):
                shutil.copy(str(photos / "cat" / "0.png"), str(photos / name / ("%d.png" % index)))
    output = tmp_path / "records"
    output.mkdir()
    (output / "train-00000-of-00001").write_bytes(b"old records")
    log_path = str(tmp_path / "log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "make_tfrecords.py", "--input_dir=%s" % photos, "--output_dir=%s" % output,
             "--overwrite", "--num_workers=2"], cwd=REPO_ROOT, env=python_env(), stdout=subprocess.PIPE,
            stderr=log, universal_newlines=True, preexec_fn=_ctrl_c_as_in_a_terminal)
        deadline = time.time() + 300
        while process.poll() is None and "converted " not in open(log_path).read() and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=300)
    stderr = open(log_path).read()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "nothing was written to %s" % output in lines[0], stderr[-3000:]
    total = 2 * PHOTOS_PER_CLASS_TO_INTERRUPT
    converted = int(re.search(r"after (\d+) of %d images" % total, lines[0]).group(1))
    assert converted < total
    assert "converted %d/%d" % (total, total) not in stderr and stdout == ""
    assert sorted(os.listdir(str(output))) == ["train-00000-of-00001"]
    assert (output / "train-00000-of-00001").read_bytes() == b"old records"


def test_train_py_names_the_tiny_record_and_exits_cleanly(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(os.path.join(DEMO_DATA, "dataset_info.json"), str(data))
    shard = str(data / "train-00000-of-00001")
    with tf.io.TFRecordWriter(shard) as writer:
        for index in range(40):
            writer.write(_record(_encoded((1, 1) if index == 7 else (16, 16), "JPEG"), index % 10))
    model_dir = str(tmp_path / "model")
    result = run_python(["train.py", "--TMP_DATA_PATH=%s" % data, "--TMP_MODEL_PATH=%s" % model_dir,
                         "--TMP_LOG_PATH=%s" % (tmp_path / "log"), "--TMP_WEIGHTS_PATH=",
                         "--model_name=efficientnet-lite0", "--image_size=32", "--batch_size=8", "--max_steps=30",
                         "--optimizer=sgd", "--moving_average_decay=0", "--image_num=40"])
    line = _error_line(result)  # exit 1 with the message, not a crash while the session closes
    assert result.returncode == 1
    assert line.startswith("error: record 7 of %s holds a 1x1 image, too small to crop" % shard), line


# 7. Messages that named the wrong cause.
def test_missing_dataset_info_is_named_not_taken_for_1000_classes(trained, tmp_path):
    data = tmp_path / "no_info"
    data.mkdir()
    shutil.copy(os.path.join(DEMO_DATA, "validation-00000-of-00001"), str(data))
    with pytest.raises(preprocess.DatasetError) as caught:
        evaluation.evaluate(str(data), trained, 64, dev=device.for_name("cpu", device_flags()))
    message = str(caught.value)
    assert "has no dataset_info.json" in message and "the model has 10 classes" in message, message
    assert "the data has 1000 classes" not in message
    shutil.copy(os.path.join(DEMO_DATA, "train-00000-of-00002"), str(data))
    line = _error_line(run_python(["train.py", "--TMP_DATA_PATH=%s" % data, "--TMP_MODEL_PATH=%s" % (tmp_path / "m"),
                                   "--TMP_LOG_PATH=%s" % (tmp_path / "l"), "--TMP_WEIGHTS_PATH=",
                                   "--num_classes=10"]))
    assert "has no dataset_info.json" in line and "--num_classes=10" in line, line
    assert not os.path.exists(str(tmp_path / "m" / run_config.RUN_CONFIG_FILE))


def test_truncated_weight_files_are_called_truncated(tmp_path):
    complete = str(tmp_path / "complete.pth")
    with zipfile.ZipFile(complete, "w") as archive:
        archive.writestr("archive/data.pkl", os.urandom(4096))
        archive.writestr("archive/data/0", os.urandom(65536))
    data = open(complete, "rb").read()
    truncated = str(tmp_path / "efficientnet_b0.pth")
    with open(truncated, "wb") as handle:
        handle.write(data[:len(data) // 2])
    with pytest.raises(weight_readers.WeightsFileError, match="truncated or damaged") as caught:
        weight_readers.read_weights(truncated)
    assert "neither" not in str(caught.value)
    h5 = str(tmp_path / "model.h5")
    with open(h5, "wb") as handle:
        handle.write(b"\x89HDF\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(weight_readers.WeightsFileError, match="truncated or damaged"):
        weight_readers.read_weights(h5)


def test_checkpoint_removed_while_test_py_reads_it(model_copy, monkeypatch, caplog):
    """A running training's retention deletes model.ckpt-4 between test.py finding it and restoring it."""
    newest = os.path.join(model_copy, "model.ckpt-4")
    original = checkpoint_reader.model_variables_restore_map

    def retention_strikes(prefix, *args, **kwargs):
        if prefix == newest:
            for path in tf.io.gfile.glob(newest + ".*"):
                os.remove(path)
        return original(prefix, *args, **kwargs)

    monkeypatch.setattr(checkpoint_reader, "model_variables_restore_map", retention_strikes)
    # Asked for the folder: its newest checkpoint now, model.ckpt-2, is evaluated.
    result = evaluation.evaluate(DEMO_DATA, model_copy, 120, dev=device.for_name("cpu", device_flags()))
    assert result["checkpoint"] == os.path.join(model_copy, "model.ckpt-2") and result["count"] == 359
    assert any("was removed while it was being read" in r.getMessage() for r in caplog.records)
    # Asked for that very checkpoint: one error saying what happened and what to do, not "damaged".
    with pytest.raises(checkpoint_reader.CheckpointRemoved) as caught:
        with tf.Graph().as_default(), tf.Session() as sess:
            variable = tf.Variable(0, name="global_step")
            checkpoint_reader.restore_or_explain(tf.train.Saver([variable]), sess, newest)
    message = str(caught.value)
    assert "was removed while it was being read" in message and "keep_checkpoint_max" in message, message
    assert "model.ckpt-2" in message and "damaged" not in message


def test_only_checkpoint_indexes_make_a_checkpoint_folder(model_copy, tmp_path):
    notes = tmp_path / "notes_only"
    notes.mkdir()
    (notes / "notes.index").write_text("page 1: the photos of 2024\n")
    assert checkpoint_reader.checkpoint_prefixes(str(notes)) == []
    assert resume.resume_checkpoint(str(notes)) is None  # a new run may start here
    (tmp_path / "notes_only" / "model.ckpt-3.index").write_bytes(b"index cut short")
    (tmp_path / "notes_only" / "model.ckpt-3.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(TrainingError, match="holds checkpoint files but no intact checkpoint"):
        resume.resume_checkpoint(str(notes))  # a damaged model checkpoint still counts
    with open(os.path.join(model_copy, "notes.index"), "w") as handle:
        handle.write("what I tried\n")
    prefix, damaged = checkpoint_reader.newest_intact_checkpoint(model_copy)
    assert prefix == os.path.join(model_copy, "model.ckpt-4") and damaged == []


def test_validation_flag_conflict_is_found_before_anything_is_written(tmp_path):
    data = tmp_path / "train_only"
    data.mkdir()
    for name in ("dataset_info.json", "labels.txt", "train-00000-of-00002"):
        shutil.copy(os.path.join(DEMO_DATA, name), str(data))
    model_dir, log_dir = tmp_path / "model", tmp_path / "log"
    line = _error_line(run_python(["train.py", "--TMP_DATA_PATH=%s" % data, "--TMP_MODEL_PATH=%s" % model_dir,
                                   "--TMP_LOG_PATH=%s" % log_dir, "--TMP_WEIGHTS_PATH=",
                                   "--early_stopping_patience=2", "--max_steps=5"]))
    assert "--early_stopping_patience needs validation" in line
    assert os.listdir(str(model_dir)) == [] and os.listdir(str(log_dir)) == []
    line = _error_line(run_python(["train.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_dir,
                                   "--TMP_LOG_PATH=%s" % log_dir, "--TMP_WEIGHTS_PATH=",
                                   "--early_stopping_patience=2", "--eval_every_n_epochs=0"]))
    assert "--early_stopping_patience=2 needs validation, which --eval_every_n_epochs=0 turns off" in line


# Beyond the listed cases: flags at the edges of their ranges, damaged pieces of a model folder.
def test_flags_out_of_range_are_one_line_before_anything_is_written(tmp_path):
    model_dir = tmp_path / "model"
    bad = ["--learning_rate=-0.1", "--momentum=1.5", "--label_smoothing=1", "--moving_average_decay=1",
           "--dropout_rate=1", "--batch_norm_momentum=-0.1", "--survival_prob=0", "--randaug_magnitude=31",
           "--warmup_epochs=-1", "--weight_decay=-1", "--num_classes=-2", "--randaug_num_layers=-1"]
    line = _error_line(run_python(["train.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_dir,
                                   "--TMP_LOG_PATH=%s" % (tmp_path / "log"), "--TMP_WEIGHTS_PATH="] + bad))
    for flag in bad:
        assert flag.split("=")[0] + "=" in line, (flag, line)
    assert not model_dir.exists()
    line = _error_line(run_python(["train.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_dir,
                                   "--learning_rate=nan"]))
    assert "--learning_rate=nan must be >= 0" in line
    line = _error_line(run_python(["test.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % model_dir,
                                   "--image_size=-3", "--num_classes=-1"]))
    assert "--image_size=-3 must be positive" in line and "--num_classes=-1 must be positive" in line


def test_damaged_pieces_of_a_model_folder_for_test_and_predict(model_copy, tmp_path):
    best_dir = os.path.join(model_copy, training_policy.BEST_DIR)
    data_file = os.path.join(best_dir, "model.ckpt-4.data-00000-of-00001")
    with open(data_file, "r+b") as handle:
        handle.truncate(os.path.getsize(data_file) // 2)
    line = _error_line(run_python(["test.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--TMP_MODEL_PATH=%s" % best_dir]))
    assert "no intact checkpoint in folder %s" % best_dir in line and "cut short" in line, line
    with open(os.path.join(model_copy, run_config.LABELS_FILE), "w") as handle:
        handle.write("zero\none\ntwo\n")
    image = str(tmp_path / "digit.png")
    Image.new("RGB", (32, 32), (0, 0, 0)).save(image)
    result = run_python(["predict.py", "--checkpoint=%s" % model_copy, "--image_size=0", image])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --image_size must be at least 1, got 0 (leave it out for the checkpoint's own)")
    result = run_python(["predict.py", "--checkpoint=%s" % model_copy, image])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "has 3 names but the model has 10 classes" in result.stderr.strip().splitlines()[-1]
