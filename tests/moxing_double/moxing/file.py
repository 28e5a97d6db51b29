"""moxing.file double: obs:// URLs are folders under $MOXING_DOUBLE_OBS_ROOT; calls are logged."""
import json
import os
from distutils import dir_util  # pylint: disable=deprecated-module

_PREFIX = "obs://"


def _record(call, *args):
    log = os.environ.get("MOXING_DOUBLE_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(json.dumps({"call": call, "args": list(args)}) + "\n")


def _local(url):
    if not url.startswith(_PREFIX):
        return url
    return os.path.join(os.environ["MOXING_DOUBLE_OBS_ROOT"], url[len(_PREFIX):])


def exists(url):
    _record("exists", url)
    return os.path.exists(_local(url))


def make_dirs(url):
    _record("make_dirs", url)
    os.makedirs(_local(url), exist_ok=True)


def copy_parallel(src_url, dst_url):
    """Copies the folder src_url into dst_url, as moxing does (missing source: an error)."""
    _record("copy_parallel", src_url, dst_url)
    source, target = _local(src_url), _local(dst_url)
    if not os.path.isdir(source):
        raise OSError("copy_parallel: %s is not a folder" % src_url)
    dir_util.copy_tree(source, target)
