"""The training layer's error and the checks of the folders a run writes."""
import os


class TrainingError(ValueError):
    """A run that cannot start or go on; the message says what to change."""


def checked_folder(path, flag):
    """Creates the folder if needed; a file in the way, or a folder that cannot be made, is an error."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise TrainingError("%s %s is a file, not a folder: pass a folder" % (flag, path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise TrainingError("cannot create %s %s (%s): pass a folder you can write to" % (flag, path, error.strerror))
    if not os.access(path, os.W_OK | os.X_OK):
        raise TrainingError("%s %s is not writable: pass a folder you can write to" % (flag, path))
    return path
