"""Copies between OBS (obs:// URLs, through Huawei's moxing) and local folders.

moxing is imported only when a URL is on OBS, and only Huawei's counts: the PyPI package of the same
name is unrelated and has no moxing.file.copy_parallel.
"""
import importlib
import os
import shutil

OBS_PREFIX = "obs://"


class StorageError(RuntimeError):
    """A URL cannot be read or written; the message names the fix."""


def is_obs(url):
    return url.startswith(OBS_PREFIX)


def load_moxing():
    """(moxing module, None) when Huawei's moxing imports, else (None, why not)."""
    try:
        mox = importlib.import_module("moxing")
    except Exception as error:  # pylint: disable=broad-except
        return None, "moxing does not import (%s: %s)" % (type(error).__name__, error)
    if not callable(getattr(getattr(mox, "file", None), "copy_parallel", None)):
        return None, ("the moxing installed (%s) is not Huawei's ModelArts moxing: it has no "
                      "moxing.file.copy_parallel" % getattr(mox, "__file__", "?"))
    return mox, None


class Storage(object):
    """Copies folders to and from local paths or obs:// URLs (moxing loaded on first OBS use)."""

    def __init__(self, log):
        self._log = log
        self._mox = None

    def _moxing(self, url):
        if self._mox is None:
            self._mox, why_not = load_moxing()
            if self._mox is None:
                raise StorageError("%s is on OBS, which needs Huawei's moxing (ModelArts images have it), but %s: "
                                   "run on ModelArts or pass a local folder" % (url, why_not))
        return self._mox

    def exists(self, url):
        return self._moxing(url).file.exists(url) if is_obs(url) else os.path.exists(url)

    def copy_folder(self, source, target):
        """Copies the folder `source` into `target` (created when missing; files of the same name replaced)."""
        self._log("copying %s -> %s" % (source, target))
        if is_obs(source) or is_obs(target):
            mox = self._moxing(source if is_obs(source) else target)
            if not is_obs(target):
                os.makedirs(target, exist_ok=True)
            mox.file.copy_parallel(source, target)
            return
        if not os.path.isdir(source):
            raise StorageError("%s is not a folder" % source)
        for folder, _, files in os.walk(source):
            destination = os.path.join(target, os.path.relpath(folder, source))
            os.makedirs(destination, exist_ok=True)
            for name in files:
                shutil.copy2(os.path.join(folder, name), os.path.join(destination, name))
