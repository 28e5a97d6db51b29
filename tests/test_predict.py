"""predict.py on the official fixture photos: named top-5 classes, skipped non-images, label sources."""
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

import freeze_graph
import predict
from effnet.export import runtimes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def golden(fixture_dir):
    with open(os.path.join(fixture_dir, "golden.json")) as f:
        info = json.load(f)
    info["ckpt_dir"] = os.path.join(fixture_dir, "ckpt")
    info["photo_paths"] = [os.path.join(fixture_dir, "photos", name) for name in info["photos"]]
    return info


@pytest.fixture(scope="module")
def imagenet_names():
    with open(os.path.join(REPO_ROOT, "imagenet_classes.txt")) as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def model(golden):
    return runtimes.open_model(golden["ckpt_dir"])


def parse_output(text):
    """{image path: [(name, index), ...]} from predict's printed lines."""
    results, current = {}, None
    for line in text.splitlines():
        if line.startswith("  ") and current is not None:
            rank_name, probability = line.strip().rsplit("  ", 1)
            float(probability)
            name, index = rank_name.split(". ", 1)[1].rsplit(" (", 1)
            results[current].append((name, int(index.rstrip(")"))))
        elif not line.startswith("model: "):
            current = line
            results[current] = []
    return results


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "predict.py")] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def test_imagenet_classes_file(imagenet_names):
    assert len(imagenet_names) == 1000 and len(set(imagenet_names)) == 1000
    expected = {0: "tench", 1: "goldfish", 207: "golden retriever", 281: "tabby cat", 282: "tiger cat",
                285: "Egyptian cat", 504: "coffee mug", 999: "toilet tissue"}
    assert {index: imagenet_names[index] for index in expected} == expected


def test_cli_prints_named_top5_per_photo(golden, imagenet_names, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(os.path.dirname(golden["photo_paths"][0]), str(photos))
    (photos / "README.txt").write_text("not an image\n")
    # --use_ema, the deprecated name of --weights_variant, still works with one warning line.
    proc = run_cli("--checkpoint=" + golden["ckpt_dir"], "--images=" + golden["photo_paths"][0], str(photos),
                   "--use_ema=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: --use_ema=true is deprecated: pass --weights_variant=ema\n" in proc.stderr
    assert "warning: skipping %s: " % (photos / "README.txt") in proc.stderr
    results = parse_output(proc.stdout)
    expected_paths = [golden["photo_paths"][0]] + [str(photos / name) for name in golden["photos"]]
    assert list(results) == expected_paths
    for path, top5 in zip(expected_paths, [golden["top5_ema"][0]] + golden["top5_ema"]):
        assert results[path] == [(imagenet_names[index], index) for index in top5]


def test_cli_exits_1_when_nothing_was_classified(golden, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00not a jpeg")
    proc = run_cli("--checkpoint=" + golden["ckpt_dir"], str(junk))
    assert proc.returncode == 1
    assert "warning: skipping %s: " % junk in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no image could be classified")


def test_cli_without_images_or_model_is_an_error(golden):
    proc = run_cli("--checkpoint=" + golden["ckpt_dir"])
    assert proc.returncode == 1 and "error: no images given" in proc.stderr
    proc = run_cli(golden["photo_paths"][0])
    assert proc.returncode == 1 and "error: pass exactly one of --checkpoint" in proc.stderr


def test_folder_with_non_image_is_reported_and_skipped(model, golden, imagenet_names, tmp_path):
    shutil.copy(golden["photo_paths"][1], str(tmp_path / "b_cat.jpg"))
    (tmp_path / "a_notes.txt").write_text("hello\n")
    (tmp_path / "c_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    files, missing = predict.collect_images([str(tmp_path), str(tmp_path / "gone.jpg")])
    assert [os.path.basename(f) for f in files] == ["a_notes.txt", "b_cat.jpg", "c_broken.png"]
    assert missing == [(str(tmp_path / "gone.jpg"), "no such file or folder")]
    out = io.StringIO()
    predicted, skipped = predict.predict(model, imagenet_names, files, top_k=3, out=out)
    assert predicted == 1
    assert [path for path, _ in skipped] == [str(tmp_path / "a_notes.txt"), str(tmp_path / "c_broken.png")]
    results = parse_output(out.getvalue())
    expected = [(imagenet_names[i], i) for i in golden["top5_ema"][1][:3]]
    assert results == {str(tmp_path / "b_cat.jpg"): expected}


def test_class_names_sources(tmp_path, imagenet_names):
    labels = tmp_path / "labels.txt"
    labels.write_text("zero\none\ntwo\n")
    assert predict.class_names(3, labels=str(labels)) == ["zero", "one", "two"]
    assert predict.class_names(3, data_path=str(tmp_path)) == ["zero", "one", "two"]
    assert predict.class_names(1000) == imagenet_names
    assert predict.class_names(2) == ["class 0", "class 1"]
    assert predict.class_names(2, data_path=str(tmp_path / "elsewhere")) == ["class 0", "class 1"]
    with pytest.raises(predict.PredictError, match="has 3 names but the model has 10 classes"):
        predict.class_names(10, labels=str(labels))


def test_frozen_graph_without_normalization_predicts_like_checkpoint(golden, imagenet_names, tmp_path):
    result = freeze_graph.freeze(golden["ckpt_dir"], output=str(tmp_path / "b0.pb"), normalize=False,
                                 batch_size=2)
    frozen = runtimes.open_model(result.output)
    assert (frozen.model_name, frozen.num_classes, frozen.image_size) == ("efficientnet-b0", 1000, 224)
    out = io.StringIO()
    predicted, skipped = predict.predict(frozen, imagenet_names, golden["photo_paths"], out=out)
    assert (predicted, skipped) == (4, [])
    results = parse_output(out.getvalue())
    for path, top5 in zip(golden["photo_paths"], golden["top5_ema"]):
        assert results[path] == [(imagenet_names[index], index) for index in top5]


def test_frozen_graph_for_aipp_is_refused_with_a_clear_message(golden, tmp_path):
    result = freeze_graph.freeze(golden["ckpt_dir"], output=str(tmp_path / "aipp.pb"), normalize=False,
                                 input_dtype="uint8")
    with pytest.raises(runtimes.ModelFileError, match="normalized by ATC's AIPP"):
        runtimes.open_model(result.output)


def test_cli_model_name_is_one_of_the_known_models(golden):
    proc = run_cli("--checkpoint=" + golden["ckpt_dir"], "--model_name=efficientnet-b9", golden["photo_paths"][0])
    assert proc.returncode == 1
    assert "--model_name=efficientnet-b9: value should be one of <efficientnet-b0|" in proc.stderr
