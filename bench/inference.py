"""Inference latency and throughput of one model in every runtime it is deployed with, as one table.

    python export.py --checkpoint=model/best --data_path=data/mydata          # writes model/best/export
    python bench/inference.py --checkpoint=model/best --export_dir=model/best/export

Times the checkpoint session, the frozen graph, TFLite float32 and int8 and ONNX Runtime (when
requirements-export.txt is installed) on batches of 1, 8 and 32 synthetic images (the models' cost does
not depend on the pixels): latency per batch p50/p90/p99 in ms and images/s (batch / mean latency), after
--warmup runs, from --runs runs or as many as fit in --max_seconds (at least 3; the table gives the count:
TF 1.15's TFLite interpreter runs int8 on reference kernels, seconds per image). The header names the CPU,
the core count, TensorFlow and the commit: figures are only comparable on the same machine under the same load.
"""
import os
import platform
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import tensorflow.compat.v1 as tf  # noqa: E402

from effnet.export import exporter, runtimes  # noqa: E402

flags.DEFINE_string("checkpoint", None, "Checkpoint folder or prefix the files were exported from.")
flags.DEFINE_string("export_dir", None, "Folder export.py wrote; default: <checkpoint dir>/export.")
flags.DEFINE_list("batch_sizes", ["1", "8", "32"], "Batch sizes to time.")
flags.DEFINE_integer("runs", 20, "Timed runs per batch size, at most.")
flags.DEFINE_float("max_seconds", 30, "Stop timing a batch size after this long (at least 3 runs).")
flags.DEFINE_integer("warmup", 1, "Untimed runs first (graph optimization, allocation).")
flags.DEFINE_integer("threads", 0, "Threads for TFLite and ONNX Runtime; 0 = their default.")
FLAGS = flags.FLAGS


def machine():
    """'CPU model, N cores, TensorFlow x, commit abc1234' for the table header."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, universal_newlines=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    return "%s, %d cores, TensorFlow %s, commit %s" % (cpu, os.cpu_count() or 0, tf.__version__, commit)


def time_runs(runtime, batch, runs, warmup, image_size, max_seconds):
    """Seconds per run of runtime.logits on `batch` synthetic images."""
    images = np.random.RandomState(0).uniform(0, 255, (batch, image_size, image_size, 3)).astype(np.float32)
    for _ in range(warmup):
        runtime.logits(images)
    seconds = []
    while len(seconds) < runs and (len(seconds) < 3 or sum(seconds) < max_seconds):
        start = time.perf_counter()
        runtime.logits(images)
        seconds.append(time.perf_counter() - start)
    return np.array(seconds)


def main(argv):
    del argv
    if not FLAGS.checkpoint:
        sys.exit("error: pass --checkpoint (and the folder export.py wrote with --export_dir)")
    tf.logging.set_verbosity(tf.logging.ERROR)
    threads = FLAGS.threads or None
    checkpoint = runtimes.CheckpointRuntime(FLAGS.checkpoint)
    export_dir = FLAGS.export_dir or os.path.join(os.path.dirname(checkpoint.prefix), "export")
    names = exporter.file_names(checkpoint.model_name)
    candidates = [("checkpoint session", lambda: checkpoint),
                  ("frozen graph (.pb)", lambda: runtimes.FrozenGraphRuntime(os.path.join(export_dir, names["pb"]))),
                  ("TFLite float32", lambda: runtimes.TFLiteRuntime(os.path.join(export_dir, names["tflite_fp32"]),
                                                                    num_threads=threads)),
                  ("TFLite int8", lambda: runtimes.TFLiteRuntime(os.path.join(export_dir, names["tflite_int8"]),
                                                                 num_threads=threads)),
                  ("ONNX Runtime", lambda: runtimes.OnnxRuntime(os.path.join(export_dir, names["onnx"]),
                                                                num_threads=threads))]
    batches = [int(size) for size in FLAGS.batch_sizes]
    print("%s %dx%d; %s" % (checkpoint.model_name, checkpoint.image_size, checkpoint.image_size, machine()))
    print("%-20s %5s %5s %9s %9s %9s %9s" % ("runtime", "batch", "runs", "p50 ms", "p90 ms", "p99 ms", "images/s"))
    for name, load in candidates:
        try:
            runtime = load()
        except (runtimes.ModelFileError, ValueError, OSError) as err:
            print("%-20s skipped: %s" % (name, str(err).splitlines()[0]))
            continue
        for batch in batches:
            seconds = time_runs(runtime, batch, FLAGS.runs, FLAGS.warmup, checkpoint.image_size, FLAGS.max_seconds)
            p50, p90, p99 = np.percentile(seconds, [50, 90, 99]) * 1000
            print("%-20s %5d %5d %9.1f %9.1f %9.1f %9.1f" % (name, batch, len(seconds), p50, p90, p99,
                                                           batch / seconds.mean()))
            sys.stdout.flush()
        if runtime is not checkpoint:
            runtime.close()
    checkpoint.close()


if __name__ == "__main__":
    app.run(main)
