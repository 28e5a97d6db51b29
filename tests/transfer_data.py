"""A small real photo dataset that needs transfer learning, made offline from what the package registry
ships: electroluminescence photos of solar cells (300x300 grey PNGs) from the PyPI wheel elpv-dataset
(Deitsch et al., CC BY-NC-SA 4.0; read from the wheel, never installed). Functional monocrystalline and
polycrystalline cells differ in texture, as photo classes do; flips and crops keep the class."""
import os
import random
import zipfile

from registry_wheels import cached_wheel

from conftest import run_python

ELPV_PACKAGE = "elpv-dataset==1.0.0.post1"
ELPV_DATA = "elpv_dataset/data/"


def solar_cell_photos(output_dir, per_class, seed=0):
    """Writes per_class functional cells of each kind into output_dir/monocrystalline/ and
    output_dir/polycrystalline/ (a seeded random choice); returns output_dir."""
    with zipfile.ZipFile(cached_wheel(ELPV_PACKAGE)) as wheel:
        cells = {"monocrystalline": [], "polycrystalline": []}
        for line in wheel.read(ELPV_DATA + "labels.csv").decode().splitlines():
            path, defect_probability, kind = line.split()
            if float(defect_probability) == 0.0:
                cells[kind[:4] + "crystalline"].append(path)
        rng = random.Random(seed)
        for name, paths in cells.items():
            os.makedirs(os.path.join(output_dir, name), exist_ok=True)
            for path in rng.sample(sorted(paths), per_class):
                with open(os.path.join(output_dir, name, os.path.basename(path)), "wb") as out:
                    out.write(wheel.read(ELPV_DATA + path))
    return output_dir


def solar_cell_records(output_dir, per_class, validation_fraction):
    """The photos converted by make_tfrecords.py, as a user does; returns the records' folder."""
    photos = solar_cell_photos(os.path.join(output_dir, "photos"), per_class)
    records = os.path.join(output_dir, "records")
    result = run_python(["make_tfrecords.py", "--input_dir=%s" % photos, "--output_dir=%s" % records,
                         "--validation_fraction=%g" % validation_fraction])
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return records
