"""Issue 13, end to end: train.py killed by SIGTERM, SIGINT and SIGKILL at random points (two seeds,
run side by side) always resumes to the right final step, never starts from scratch in a folder
with checkpoints, and never keeps more than --keep_checkpoint_max checkpoints; the last run of each
chain goes on in a copy of the folder (original moved away, newest checkpoint damaged, stale lock)
and resumes from the copy's own newest intact checkpoint. Four launches per seed."""
import concurrent.futures
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow.compat.v1 as tf

from conftest import DEMO_DATA, REPO_ROOT, python_env, saved_checkpoint_steps

from effnet.checkpoints import checkpoint_reader
from effnet.checkpoints import checkpoint_writer

TOTAL_STEPS = 14
KEEP = 2
SEEDS = (0, 1)
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}


def _command(model_dir, max_steps=TOTAL_STEPS):
    return [sys.executable, "train.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--image_size=32", "--batch_size=8",
            "--TMP_MODEL_PATH=%s" % model_dir, "--TMP_LOG_PATH=%s" % (model_dir + "_log"), "--TMP_WEIGHTS_PATH=",
            "--model_name=efficientnet-lite0", "--optimizer=sgd", "--moving_average_decay=0",
            "--max_steps=%d" % max_steps, "--save_checkpoints_steps=2", "--keep_checkpoint_max=%d" % KEEP,
            "--log_every_n_steps=1"]


def _held_step(prefix):
    return int(tf.train.NewCheckpointReader(prefix).get_tensor("global_step"))


def _run(model_dir, log_path, signum=None, after_steps=0, delay=0.0, max_steps=TOTAL_STEPS):
    """Runs train.py; with signum, sends it `delay` seconds after it logged `after_steps` + 1 training steps
    (or at once when it exits before)."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(_command(model_dir, max_steps), cwd=REPO_ROOT, env=python_env(),
                                   stdout=subprocess.DEVNULL, stderr=log)
        if signum is not None:
            deadline = time.time() + 600
            while process.poll() is None and time.time() < deadline:
                if len(re.findall(r"step \d+/%d" % max_steps, open(log_path).read())) > after_steps:
                    break
                time.sleep(0.05)
            time.sleep(delay)
            if process.poll() is None:
                process.send_signal(signum)
        process.wait(timeout=600)
    return process.returncode, open(log_path).read()


def _chain(seed, root):
    """Three interrupted runs (the seed orders the signals and picks the delays), then one to the end on a
    copy of the folder whose newest checkpoint is damaged, with the original moved away and a stale lock."""
    rng = random.Random(seed)
    model_dir = os.path.join(root, "model_%d" % seed)
    order = [signal.SIGTERM, signal.SIGINT, signal.SIGKILL]
    rng.shuffle(order)
    runs = []
    for index, signum in enumerate(order):
        before = saved_checkpoint_steps(model_dir) if os.path.isdir(model_dir) else []
        code, log = _run(model_dir, os.path.join(root, "run_%d_%d.log" % (seed, index)), signum,
                         rng.randint(0, 3), rng.uniform(0.0, 1.0))
        saved = re.search(r"^interrupted by \w+: saved step (\d+) as (\S+);", log, re.M)
        runs.append({"signal": signum, "before": before, "after": saved_checkpoint_steps(model_dir), "code": code, "log": log,
                     "saved": saved and (int(saved.group(1)), _held_step(saved.group(2)),
                                         checkpoint_reader.checkpoint_step(saved.group(2)))})
    moved, copy = model_dir + "_moved", model_dir + "_copy"
    shutil.copytree(model_dir, copy)
    os.rename(model_dir, moved)  # a state file with absolute paths would now point nowhere
    moved_files = {name: os.path.getmtime(os.path.join(moved, name)) for name in os.listdir(moved)}
    before = saved_checkpoint_steps(copy)
    damaged = before[-1] if len(before) > 1 else None
    if damaged is not None:
        os.remove(os.path.join(copy, "model.ckpt-%d.index" % damaged))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(copy, checkpoint_writer.LOCK_FILE), "w") as lock:
        lock.write('{"pid": %d, "host": "%s"}' % (dead.pid, socket.gethostname()))
    code, log = _run(copy, os.path.join(root, "run_%d_final.log" % seed))
    runs.append({"signal": None, "before": before, "after": saved_checkpoint_steps(copy), "code": code, "log": log,
                 "damaged": damaged, "copy": copy, "moved": moved, "moved_files": moved_files})
    return runs


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("faults"))
    with concurrent.futures.ThreadPoolExecutor(len(SEEDS)) as pool:
        return dict(zip(SEEDS, pool.map(lambda seed: _chain(seed, root), SEEDS)))


@pytest.mark.parametrize("seed", SEEDS)
def test_signals_at_random_points_lose_nothing(chains, seed):
    for run in chains[seed]:
        described = "%s run, checkpoints %s -> %s:\n%s" % (run["signal"], run["before"], run["after"], run["log"])
        assert "Traceback" not in run["log"], described
        if run["before"]:
            assert "training from scratch" not in run["log"] and "resuming from" in run["log"], described
            assert max(run["after"]) >= max(run["before"]), described
        assert len(run["after"]) <= KEEP, described
        if run["signal"] is None:
            assert run["code"] == 0 and max(run["after"]) == TOTAL_STEPS, described
            continue
        if "done: %d steps" % TOTAL_STEPS in run["log"]:  # the signal came after the last step
            assert run["code"] in (0, EXIT_CODES[run["signal"]], -run["signal"]), described
            assert max(run["after"]) == TOTAL_STEPS, described
            continue
        assert run["code"] == EXIT_CODES[run["signal"]], described
        if run["signal"] != signal.SIGKILL:
            stopped = [line for line in run["log"].splitlines() if line.startswith("interrupted by ")]
            assert len(stopped) == 1 and signal.Signals(run["signal"]).name in stopped[0], described
            if run["saved"]:  # (step reported, step held, step in the name): all one, and the newest on disk
                assert len(set(run["saved"])) == 1 and run["saved"][0] == max(run["after"]), described


@pytest.mark.parametrize("seed", SEEDS)
def test_copied_folder_resumes_from_its_own_newest_intact_checkpoint(chains, seed):
    final = chains[seed][-1]
    copy, damaged = final["copy"], final["damaged"]
    assert final["code"] == 0, final["log"]
    if damaged is not None:
        assert "skipping damaged checkpoint(s): model.ckpt-%d (model.ckpt-%d.index is missing)" % (
            damaged, damaged) in final["log"]
        resumed = final["before"][-2]
        assert "resuming from %s/model.ckpt-%d (step %d)" % (copy, resumed, resumed) in final["log"]
    assert _held_step(os.path.join(copy, "model.ckpt-%d" % TOTAL_STEPS)) == TOTAL_STEPS
    assert not os.path.exists(os.path.join(copy, checkpoint_writer.LOCK_FILE)), "the stale lock was taken over"
    moved = final["moved"]
    assert {name: os.path.getmtime(os.path.join(moved, name)) for name in os.listdir(moved)} == final["moved_files"]
    assert open(os.path.join(copy, "labels.txt")).read() == open(os.path.join(DEMO_DATA, "labels.txt")).read()
