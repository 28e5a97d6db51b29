"""export.py on the real ImageNet Lite0 weights: every format names the fixture photos as the checkpoint does and
stays within its logit bound; a failed check or bad input writes nothing under the final names. (The int8
accuracy of a fine-tuned model is checked in test_transfer.py, beside the model it fine-tunes.)"""
import io
import os
import re

import numpy as np
import pretrained_weights
import pytest
import tensorflow.compat.v1 as tf

import predict
from conftest import DEMO_DATA, run_python
from effnet.export import exporter, runtimes

FLOAT_FORMATS = ["pb", "saved_model", "tflite_fp32", "tflite_fp16", "onnx"]
SIZE = 160  # not the model's 224: a third of the CPU time, and the files are compared with the checkpoint at 160
ROW = re.compile(r"^(\w+)\s+(\S+)\s+([\d.]+)\s+(\S+) \((<= \S+|int8)\)\s+([\d.]+)%\s+(.+?)\s+(ok|FAILED)$", re.M)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    return pretrained_weights.convert_real_lite0(tmp_path_factory.mktemp("lite0"))


def table(stdout):
    """{format: (file, max relative difference, top-1 agreement %, 'ok'|'FAILED')} from export.py's table."""
    return {m.group(1): (m.group(2), float(m.group(4)), float(m.group(6)), m.group(8)) for m in ROW.finditer(stdout)}


def photo_names(model, photos):
    """{photo: top-1 class name} as predict.py prints it."""
    output = io.StringIO()
    predict.predict(model, predict.class_names(1000), photos, top_k=1, out=output)
    names, photo = {}, None
    for line in output.getvalue().splitlines():
        if not line.startswith(" "):
            photo = os.path.basename(line)
        else:
            names[photo] = re.match(r"\s+1\. (.+) \(\d+\)", line).group(1)
    return names


def test_every_float_format_names_the_photos_as_the_checkpoint(lite0, fixture_dir, tmp_path):
    pytest.importorskip("tf2onnx", reason="pip install -r requirements-export.txt (run_tests.sh installs it)")
    photos = sorted(os.path.join(fixture_dir, "photos", name) for name in os.listdir(os.path.join(fixture_dir,
                                                                                                  "photos")))
    output = tmp_path / "export"
    result = run_python(["export.py", "--checkpoint=%s" % lite0, "--output_dir=%s" % output,
                         "--formats=%s" % ",".join(FLOAT_FORMATS), "--images=%s" % ",".join(photos),
                         "--image_size=%d" % SIZE])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Checked on 4 given photos against the checkpoint (raw weights; " in result.stdout
    rows = table(result.stdout)
    assert sorted(rows) == sorted(FLOAT_FORMATS), result.stdout
    for kind, (_, difference, agreement, status) in rows.items():
        assert status == "ok" and agreement == 100.0, result.stdout
        assert difference <= exporter.FLOAT_BOUNDS[kind], (kind, difference)
    # As measured here at 224 px, far inside the bounds: float32 formats below 1e-6, float16 2.4e-3.
    assert rows["tflite_fp16"][1] > rows["tflite_fp32"][1]
    names = exporter.file_names("efficientnet-lite0")
    assert sorted(os.listdir(str(output))) == sorted([names[kind] for kind in FLOAT_FORMATS] + ["aipp.cfg"])
    pb, onnx = output / "efficientnet-lite0.pb", output / "efficientnet-lite0.onnx"
    assert ('atc --model=%s --framework=3 --output=%s --soc_version=Ascend310 --input_shape="input:1,%d,%d,3" '
            '--input_format=NHWC' % (pb, output / "efficientnet-lite0", SIZE, SIZE)) in result.stdout
    assert ('atc --model=%s --framework=5 --output=%s_onnx --soc_version=Ascend310 --input_shape="input:1,3,%d,%d" '
            '--input_format=NCHW --output_type=FP32 --insert_op_conf=%s'
            % (onnx, output / "efficientnet-lite0", SIZE, SIZE, output / "aipp.cfg")) in result.stdout
    assert (output / "aipp.cfg").read_text() == exporter.aipp_config(SIZE)

    # predict.py's path, per file: the same top-1 names as the checkpoint's.
    expected = photo_names(runtimes.open_model(str(lite0), image_size=SIZE), photos)
    for kind in FLOAT_FORMATS:
        path = str(output / names[kind])
        assert photo_names(runtimes.open_model(path), photos) == expected, kind

    # The SavedModel's serving signature gives probabilities and the top 5 besides the logits.
    with tf.Graph().as_default(), tf.Session() as sess:
        meta = tf.saved_model.loader.load(sess, ["serve"], str(output / "saved_model"))
        signature = meta.signature_def["serving_default"]
        assert sorted(signature.outputs) == ["logits", "probabilities", "top_k_classes", "top_k_probabilities"]
        images = np.zeros([2, SIZE, SIZE, 3], np.float32)
        probabilities, classes = sess.run([signature.outputs["probabilities"].name,
                                           signature.outputs["top_k_classes"].name],
                                          {signature.inputs["images"].name: images})
    assert classes.shape == (2, 5) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    again = run_python(["export.py", "--checkpoint=%s" % lite0, "--output_dir=%s" % output, "--formats=pb",
                        "--images=%s" % photos[0]])
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        "error: %s already exists: pass another --output_dir, or --overwrite to replace it"
        % (output / "efficientnet-lite0.pb"))


def test_a_failed_check_leaves_that_file_out_and_says_why(lite0, tmp_path):
    output = tmp_path / "export"
    result = run_python(["export.py", "--checkpoint=%s" % lite0, "--output_dir=%s" % output, "--image_size=64",
                         "--formats=pb,tflite_int8", "--data_path=%s" % DEMO_DATA, "--check_images=8",
                         "--calibration_images=10", "--int8_min_agreement=1.01"])
    assert result.returncode == 1
    rows = table(result.stdout)
    assert rows["pb"][3] == "ok" and rows["tflite_int8"][3] == "FAILED", result.stdout
    assert re.search(r"error: %s not written: int8 top-1 agrees with the checkpoint on [\d.]+%% of the images, "
                     r"less than 101.0%%" % re.escape(str(output / "efficientnet-lite0_int8.tflite")), result.stderr)
    assert sorted(os.listdir(str(output))) == ["aipp.cfg", "efficientnet-lite0.pb"]  # no temporary file left


def _fake_checkpoint(folder):
    with tf.Graph().as_default():
        variable = tf.Variable(tf.zeros([3]), name="resnet50/conv1/kernel")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return tf.train.Saver([variable]).save(sess, os.path.join(str(folder), "model.ckpt"))


def test_bad_input_is_one_line_and_writes_nothing(lite0, tmp_path):
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("")
    other = tmp_path / "other"
    other.mkdir()
    _fake_checkpoint(other)
    common = ["--data_path=%s" % DEMO_DATA, "--image_size=32"]
    cases = [
        (["--checkpoint=%s" % other, "--output_dir=%s" % (tmp_path / "out1")] + common,
         r"error: checkpoint \S+ holds no efficientnet-\* variables: pass a checkpoint written by train.py or "
         r"convert_weights.py"),
        (["--checkpoint=%s" % lite0, "--output_dir=%s" % (not_a_folder / "export")] + common,
         r"error: cannot write \S+: %s is a file, not a folder; pass a --output_dir in a writable folder"
         % re.escape(str(not_a_folder))),
        (["--checkpoint=%s" % lite0, "--output_dir=%s" % (tmp_path / "out2"), "--formats=tflite_int8",
          "--calibration_images=5"] + common,
         r"error: --calibration_images=5 is too few to calibrate int8 ranges: pass at least 10"),
        (["--checkpoint=%s" % lite0, "--output_dir=%s" % (tmp_path / "out3"), "--formats=tflite_int8",
          "--calibration_images=2000"] + common,
         r"error: the training split of \S+ holds 1438 images, fewer than --calibration_images=2000: pass "
         r"--calibration_images=1438 or less \(at least 10\), or more training data"),
        (["--checkpoint=%s" % lite0, "--output_dir=%s" % (tmp_path / "out4"), "--formats=pb,tflite_int4"] + common,
         r"error: unknown format 'tflite_int4' in --formats: choose from pb,saved_model,tflite_fp32,tflite_fp16,"
         r"tflite_int8,onnx \(or all\)"),
    ]
    for flags, message in cases:
        result = run_python(["export.py"] + flags)
        assert result.returncode == 1, (flags, result.stdout)
        last = result.stderr.strip().splitlines()[-1]
        assert re.fullmatch(message, last), (flags, last)
    assert sorted(os.listdir(str(tmp_path))) == ["a_file", "other"]
    assert sorted(os.listdir(str(other))) == ["checkpoint", "model.ckpt.data-00000-of-00001", "model.ckpt.index",
                                              "model.ckpt.meta"]


def test_a_missing_optional_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(exporter, "onnx_available", lambda: False)
    with pytest.raises(exporter.ExportError, match=r"^tf2onnx/onnxruntime is not installed \(needed for ONNX\): "
                                                   r"pip install -r requirements-export.txt"):
        exporter.choose_formats(["onnx"])
    assert exporter.choose_formats([]) == [kind for kind in exporter.FORMATS if kind != "onnx"]
    with pytest.raises(runtimes.ModelFileError, match="pip install -r requirements-export.txt"):
        runtimes.import_optional("a_module_that_is_not_there", "tf2onnx")


def test_exported_files_are_told_by_name_and_bad_ones_are_one_line(tmp_path):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    assert [runtimes.kind_of(str(path)) for path in (
        tmp_path / "m.pb", tmp_path / "m.TFLITE", tmp_path / "m.onnx", tmp_path / "saved", tmp_path,
        tmp_path / "model.ckpt-20", None)] == ["pb", "tflite", "onnx", "saved_model", None, None, None]
    for name in ("broken.pb", "broken.tflite"):
        (tmp_path / name).write_bytes(b"not a model")
        with pytest.raises(runtimes.ModelFileError, match="pass a .* written by export.py"):
            runtimes.open_model(str(tmp_path / name))
    with pytest.raises(runtimes.ModelFileError, match="model file .*gone.tflite not found"):
        runtimes.open_model(str(tmp_path / "gone.tflite"))
    result = run_python(["test.py", "--TMP_DATA_PATH=%s" % DEMO_DATA,
                         "--TMP_MODEL_PATH=%s" % (tmp_path / "broken.tflite")])
    assert result.returncode == 1
    assert re.fullmatch(r"error: cannot load \S+broken.tflite as a TFLite model \(.*\): pass a .tflite written by "
                        r"export.py", result.stderr.strip().splitlines()[-1]), result.stderr[-2000:]
