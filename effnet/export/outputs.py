"""Output paths of the export tools: an input is never overwritten, an existing file only with --overwrite,
and every file or folder is written under a temporary name and renamed when complete, so a failed or
interrupted export leaves nothing half-written under the name the user asked for."""
import contextlib
import glob
import os
import shutil
import uuid


class OutputError(ValueError):
    """An output path the tool must not write; the message names the fix."""


def checkpoint_inputs(prefix):
    """The files an export reads for checkpoint `prefix`: its data and index files, and the folder's
    run record, labels and `checkpoint` state file."""
    folder = os.path.dirname(prefix) or "."
    own = glob.glob(glob.escape(prefix) + ".*")
    beside = [os.path.join(folder, name) for name in ("checkpoint", "run_config.json", "labels.txt")]
    return own + [path for path in beside if os.path.exists(path)]


def check_output(path, inputs=(), overwrite=False, flag="--output"):
    """Raises OutputError when `path` is one of `inputs` (even with overwrite), exists and overwrite is
    off, or its folder cannot be written."""
    real = os.path.realpath(path)
    for source in inputs:
        if os.path.realpath(source) == real:
            raise OutputError("%s is an input of this export (%s): pass another %s"
                              % (path, os.path.basename(source), flag))
    if os.path.lexists(path) and not overwrite:
        raise OutputError("%s already exists: pass another %s, or --overwrite to replace it" % (path, flag))
    existing = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError("cannot write %s: %s is a file, not a folder; pass a %s in a writable folder"
                          % (path, existing, flag))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError("cannot write %s: folder %s is not writable; pass a %s in a writable folder"
                          % (path, existing, flag))


@contextlib.contextmanager
def written_atomically(path, overwrite=False):
    """Yields a temporary path beside `path` to write a file or folder to; on success renames it to
    `path` (replacing an existing one only when overwrite), on any error removes it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # The extension stays last, so readers that go by it (TFLite, ONNX) take the temporary file too.
    temporary = os.path.join(folder, ".tmp-%s-%s" % (uuid.uuid4().hex[:8], os.path.basename(path)))
    try:
        yield temporary
        if os.path.lexists(path):
            if not overwrite:
                raise OutputError("%s appeared while it was written: pass a new name, or --overwrite" % path)
            _remove(path)
        os.rename(temporary, path)
    finally:
        if os.path.lexists(temporary):
            _remove(temporary)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
