"""A ModelArts training job: data in from data_url, test/train_full_1p.sh (acc) or
test/train_performance_1p.sh (perf), results out to train_url, also when training fails.

data_url and train_url are local folders (what newer ModelArts jobs mount) or obs:// URLs (copied
through Huawei's moxing). Arguments other than this module's flags go to the test script and win
over configs/modelarts.yaml.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

from absl import flags

from effnet import cli
from effnet.modelarts import job_config, storage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = {"acc": "test/train_full_1p.sh", "perf": "test/train_performance_1p.sh"}
PREFIX = "[CANN-Modelzoo]"
# The local SSD of ModelArts training containers; elsewhere the system's temporary folder.
MODELARTS_CACHE = "/cache"

FLAGS = flags.FLAGS


def define_flags():
    """Defines the job's own flags (the rest of the command line goes to the test script)."""
    flags.DEFINE_string("data_url", "/home/ma-user/modelarts/inputs/data_url_0",
                        "Folder or obs:// URL of the TFRecords (train-* and validation-* files).")
    flags.DEFINE_string("train_url", "/home/ma-user/modelarts/outputs/train_url_0/",
                        "Folder or obs:// URL that receives the result log, the training log, the best (else last) "
                        "checkpoint and, with freeze_pb, the frozen graph.")
    flags.DEFINE_string("config_file", os.path.join(ROOT, "configs", "modelarts.yaml"),
                        "The job's parameters (class count, pretrained weights, epochs, batch, freeze_pb).")
    flags.DEFINE_string("cache_dir", None, "Local folder for the copied data and the run's outputs; default %s when "
                        "writable, else the system's temporary folder." % MODELARTS_CACHE)


def log(message):
    print("%s %s" % (PREFIX, message), flush=True)


def _cache_dir():
    if FLAGS.cache_dir:
        return FLAGS.cache_dir
    return MODELARTS_CACHE if os.access(MODELARTS_CACHE, os.W_OK) else tempfile.gettempdir()


def _local_data(store, work_dir):
    """The local folder holding the data: data_url itself, or its copy when on OBS."""
    if not storage.is_obs(FLAGS.data_url):
        return FLAGS.data_url
    local = os.path.join(work_dir, "data")
    store.copy_folder(FLAGS.data_url, local)
    return local


def _local_pretrained(store, path, data_dir, work_dir):
    """The pretrained checkpoint as a local path: OBS folders (or a prefix's folder) are copied;
    relative paths are inside data_url."""
    if storage.is_obs(path):
        prefix = store.exists(path.rstrip("/") + ".index")
        folder = path.rstrip("/").rsplit("/", 1)[0] if prefix else path
        local = os.path.join(work_dir, "pretrained")
        store.copy_folder(folder, local)
        return os.path.join(local, path.rstrip("/").rsplit("/", 1)[1]) if prefix else local
    return path if os.path.isabs(path) else os.path.join(data_dir, path)


def _newest_checkpoint(model_dir):
    """The prefix named by model_dir's `checkpoint` state file (relative names), or None."""
    try:
        with open(os.path.join(model_dir, "checkpoint")) as handle:
            match = re.search(r'^model_checkpoint_path: "(.*)"$', handle.read(), re.M)
    except (IOError, OSError):
        return None
    return match.group(1) if match else None


def stage_results(output_dir, upload_dir):
    """Puts what goes to train_url into upload_dir: the logs, and the best checkpoint (ckpt/best/ when
    validation ran) else the newest one, as ckpt/. Returns the local checkpoint folder used, or None."""
    os.makedirs(upload_dir, exist_ok=True)
    for path in glob.glob(os.path.join(output_dir, "*.log")) + glob.glob(os.path.join(output_dir, "*_loss.txt")):
        shutil.copy2(path, upload_dir)
    model_dir = os.path.join(output_dir, "ckpt")
    best_dir = os.path.join(model_dir, "best")
    source = best_dir if _newest_checkpoint(best_dir) else model_dir
    prefix = _newest_checkpoint(source)
    if prefix is None:
        return None
    target = os.path.join(upload_dir, "ckpt")
    os.makedirs(target)
    names = [os.path.basename(p) for p in glob.glob(os.path.join(source, prefix + ".*"))]
    for name in names + [n for n in ("run_config.json", "labels.txt") if os.path.exists(os.path.join(source, n))]:
        shutil.copy2(os.path.join(source, name), target)
    with open(os.path.join(target, "checkpoint"), "w") as handle:
        handle.write('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' % (prefix, prefix))
    return target


def freeze(checkpoint_dir, upload_dir):
    """Writes the frozen graph of checkpoint_dir into upload_dir with freeze_graph.py; True when it worked."""
    log("freezing %s into a .pb" % checkpoint_dir)
    output = os.path.join(upload_dir, "efficientnet.pb")
    code = subprocess.call([sys.executable, os.path.join(ROOT, "freeze_graph.py"), "--checkpoint=%s" % checkpoint_dir,
                            "--output=%s" % output])
    if code != 0:
        log("freeze_graph.py failed with exit code %d; train_url gets the checkpoint without a .pb" % code)
    return code == 0


def run(kind, script_args):
    """The whole job; returns its exit code (the test script's when training fails)."""
    store = storage.Storage(log)
    values = job_config.read(FLAGS.config_file)
    work_dir = tempfile.mkdtemp(prefix="efficientnet_modelarts_", dir=_cache_dir())
    log("data_url %s | train_url %s | work folder %s" % (FLAGS.data_url, FLAGS.train_url, work_dir))
    data_dir = _local_data(store, work_dir)
    if "pretrained_path" in values:
        values["pretrained_path"] = _local_pretrained(store, values["pretrained_path"], data_dir, work_dir)
    output_dir = os.path.join(work_dir, "output")
    command = ["bash", os.path.join(ROOT, SCRIPTS[kind]), "--data_path=%s" % data_dir, "--output_path=%s" % output_dir]
    command += job_config.script_arguments(values, script_args)
    log("running %s" % " ".join(command))
    code = subprocess.call(command)
    if code != 0:
        log("training failed with exit code %d; copying its log to %s" % (code, FLAGS.train_url))
    upload_dir = os.path.join(work_dir, "upload")
    checkpoint_dir = stage_results(output_dir, upload_dir)
    if code == 0 and values.get("freeze_pb"):
        if checkpoint_dir is None:
            log("freeze_pb: no checkpoint was written, so there is no .pb")
        else:
            freeze(checkpoint_dir, upload_dir)
    store.copy_folder(upload_dir, FLAGS.train_url)
    log("done: %s holds %s" % (FLAGS.train_url, ", ".join(sorted(os.listdir(upload_dir))) or "nothing"))
    return code


def main(kind, argv):
    """Entry point of modelarts_entry_<kind>.py: argv[1:] holds this module's flags and the test script's.
    Exits as every CLI does (effnet/cli.py), but its error line is a log line: `[CANN-Modelzoo] error: ...`
    on stdout, where ModelArts users read the job's own lines."""
    def _main(rest):
        try:
            return run(kind, rest[1:])
        except (job_config.JobConfigError, storage.StorageError) as error:
            log("error: %s" % error)
            return cli.EXIT_ERROR

    cli.run(_main, define_flags=define_flags, arguments=True, argv=argv,
            flags_parser=lambda args: FLAGS(args, known_only=True))
