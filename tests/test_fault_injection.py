"""Issue 13, end to end: train.py killed by SIGTERM, SIGINT and SIGKILL at random points (two seeds,
run side by side) always resumes to the right final step, never deletes the newest intact checkpoint,
never starts from scratch in a folder with checkpoints, and keeps at most --keep_checkpoint_max
checkpoints up to the newest intact one (one more only after a SIGKILL between a save and its
retention: the next run trims it when it starts); the last run of each chain goes on in a copy of the
folder (original moved away, newest checkpoint damaged, stale lock) and resumes from the copy's own
newest intact checkpoint. Four launches per seed.

Every assertion holds wherever a signal lands (issue 18: CI must never fail by chance). The seeds
are FAULT_INJECTION_SEEDS (space-separated, default "0 1"), to run the module with many of them."""
import concurrent.futures
import json
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

from conftest import DEMO_DATA, REPO_ROOT, listed_checkpoint_steps, python_env, saved_checkpoint_steps
from effnet.checkpoints import checkpoint_reader, checkpoint_writer

TOTAL_STEPS = 14
KEEP = 2
SEEDS = tuple(int(seed) for seed in os.environ.get("FAULT_INJECTION_SEEDS", "0 1").split())
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}


def _command(model_dir, max_steps=TOTAL_STEPS, keep=KEEP):
    return [sys.executable, "train.py", "--TMP_DATA_PATH=%s" % DEMO_DATA, "--image_size=32", "--batch_size=8",
            "--TMP_MODEL_PATH=%s" % model_dir, "--TMP_LOG_PATH=%s" % (model_dir + "_log"), "--TMP_WEIGHTS_PATH=",
            "--model_name=efficientnet-lite0", "--optimizer=sgd", "--moving_average_decay=0",
            "--max_steps=%d" % max_steps, "--save_checkpoints_steps=2", "--keep_checkpoint_max=%d" % keep,
            "--log_every_n_steps=1"]


def _held_step(prefix):
    return int(tf.train.NewCheckpointReader(prefix).get_tensor("global_step"))


def _newest_intact_step(model_dir):
    """The step of the newest intact checkpoint, or None; a save cut short by SIGKILL can leave a damaged
    newer one, which retention leaves until training writes that step again."""
    prefix, _ = checkpoint_reader.newest_intact_checkpoint(model_dir)
    return prefix and checkpoint_reader.checkpoint_step(prefix)


def _counted(steps, newest_intact):
    """The checkpoints retention counts: those up to the newest intact one."""
    return [step for step in steps if newest_intact is not None and step <= newest_intact]


def _run(model_dir, log_path, signum=None, after_steps=0, delay=0.0, max_steps=TOTAL_STEPS, keep=KEEP):
    """Runs train.py; with signum, sends it `delay` seconds after it logged `after_steps` + 1 training steps
    (or at once when it exits before)."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(_command(model_dir, max_steps, keep), cwd=REPO_ROOT, env=python_env(),
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
        exists = os.path.isdir(model_dir)
        before = saved_checkpoint_steps(model_dir) if exists else []
        intact_before = _newest_intact_step(model_dir) if exists else None
        # The first run is signalled after its third step line, so once its first save (step 2) is complete:
        # a SIGKILL that cuts the only save short leaves no intact checkpoint, and then train.py refuses to
        # start rather than train from scratch over it (test_reliability.py), which would end the chain.
        code, log = _run(model_dir, os.path.join(root, "run_%d_%d.log" % (seed, index)), signum,
                         rng.randint(2 if index == 0 else 0, 3), rng.uniform(0.0, 1.0))
        saved = re.search(r"^interrupted by \w+: saved step (\d+) as (\S+);", log, re.M)
        runs.append({"signal": signum, "before": before, "after": saved_checkpoint_steps(model_dir), "code": code,
                     "log": log, "intact_before": intact_before, "intact_after": _newest_intact_step(model_dir),
                     "saved": saved and (int(saved.group(1)), _held_step(saved.group(2)),
                                         checkpoint_reader.checkpoint_step(saved.group(2)))})
    moved, copy = model_dir + "_moved", model_dir + "_copy"
    shutil.copytree(model_dir, copy)
    os.rename(model_dir, moved)  # a state file with absolute paths would now point nowhere
    moved_files = {name: os.path.getmtime(os.path.join(moved, name)) for name in os.listdir(moved)}
    intact = [step for step in saved_checkpoint_steps(copy)
              if checkpoint_reader.checkpoint_problem(os.path.join(copy, "model.ckpt-%d" % step)) is None]
    damaged = intact[-1] if len(intact) > 1 else None
    if damaged is not None:
        os.remove(os.path.join(copy, "model.ckpt-%d.index" % damaged))
    before, intact_before = saved_checkpoint_steps(copy), _newest_intact_step(copy)
    # A stale lock as a killed run leaves it: its start time tells a reused pid from the dead holder.
    dead = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = checkpoint_writer._process_start_time(dead.pid)
    dead.communicate()
    with open(os.path.join(copy, checkpoint_writer.LOCK_FILE), "w") as lock:
        json.dump({"pid": dead.pid, "host": socket.gethostname(), "start_time": started}, lock)
    code, log = _run(copy, os.path.join(root, "run_%d_final.log" % seed))
    runs.append({"signal": None, "before": before, "after": saved_checkpoint_steps(copy), "code": code, "log": log,
                 "intact_before": intact_before, "intact_after": _newest_intact_step(copy), "damaged": damaged,
                 "resumed": intact[-2] if damaged is not None else None, "copy": copy, "moved": moved,
                 "moved_files": moved_files})
    return runs


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("faults"))
    with concurrent.futures.ThreadPoolExecutor(len(SEEDS)) as pool:
        return dict(zip(SEEDS, pool.map(lambda seed: _chain(seed, root), SEEDS)))


@pytest.mark.parametrize("seed", SEEDS)
def test_signals_at_random_points_lose_nothing(chains, seed):
    done = "done: %d steps" % TOTAL_STEPS
    for run in chains[seed]:
        described = "%s run, checkpoints %s -> %s:\n%s" % (run["signal"], run["before"], run["after"], run["log"])
        log = run["log"]
        late_sigint = run["signal"] == signal.SIGINT and done in log
        if late_sigint and log.rstrip().endswith("\nKeyboardInterrupt"):
            # A SIGINT that lands while Python exits (after main returned, or in an atexit handler) gets
            # Python's own KeyboardInterrupt traceback: the run had finished and saved everything.
            log = log[:log.index(done)]
        assert "Traceback" not in log, described
        if run["before"]:
            assert "training from scratch" not in run["log"] and "resuming from" in run["log"], described
            # The newest intact checkpoint is never deleted (a newer one may replace it), nor a damaged newer one
            # before training writes its step again.
            assert run["intact_after"] is not None and run["intact_after"] >= run["intact_before"], described
            assert max(run["after"]) >= max(run["before"]), described
        # Retention runs after each save and once a resumed run has restored: one checkpoint too many is
        # left only by a SIGKILL between a save and its retention.
        counted = _counted(run["after"], run["intact_after"])
        assert len(counted) <= (KEEP + 1 if run["signal"] == signal.SIGKILL else KEEP), described
        if run["signal"] is None:
            assert run["code"] == 0 and run["intact_after"] == TOTAL_STEPS, described
            continue
        if done in run["log"]:  # the signal came after the last step
            codes = (0, EXIT_CODES[run["signal"]], -run["signal"]) + ((1,) if late_sigint else ())
            assert run["code"] in codes, described
            assert run["intact_after"] == TOTAL_STEPS, described
            continue
        assert run["code"] == EXIT_CODES[run["signal"]], described
        if run["signal"] != signal.SIGKILL:
            stopped = [line for line in run["log"].splitlines() if line.startswith("interrupted by ")]
            assert len(stopped) == 1 and signal.Signals(run["signal"]).name in stopped[0], described
            if run["saved"]:  # (step reported, step held, step in the name): all one, the newest intact on disk
                assert len(set(run["saved"])) == 1 and run["saved"][0] == run["intact_after"], described


@pytest.mark.parametrize("seed", SEEDS)
def test_copied_folder_resumes_from_its_own_newest_intact_checkpoint(chains, seed):
    final = chains[seed][-1]
    copy, damaged = final["copy"], final["damaged"]
    assert final["code"] == 0, final["log"]
    if damaged is not None:
        skipped = [line for line in final["log"].splitlines() if "skipping damaged checkpoint(s): " in line]
        assert len(skipped) == 1 and "model.ckpt-%d (model.ckpt-%d.index is missing)" % (damaged, damaged) in skipped[0]
        resumed = final["resumed"]
        assert "resuming from %s/model.ckpt-%d (step %d)" % (copy, resumed, resumed) in final["log"]
    assert _held_step(os.path.join(copy, "model.ckpt-%d" % TOTAL_STEPS)) == TOTAL_STEPS
    assert not os.path.exists(os.path.join(copy, checkpoint_writer.LOCK_FILE)), "the stale lock was taken over"
    moved = final["moved"]
    assert {name: os.path.getmtime(os.path.join(moved, name)) for name in os.listdir(moved)} == final["moved_files"]
    assert open(os.path.join(copy, "labels.txt")).read() == open(os.path.join(DEMO_DATA, "labels.txt")).read()


def test_a_new_run_trims_what_a_kill_before_retention_left(tmp_path):
    """A SIGKILL between a save and its retention leaves keep + 1 checkpoints (the same files as a run with a
    larger --keep_checkpoint_max leaves); the next run trims them to keep once it has restored, before any
    step: it keeps the newest intact one it resumes from, and the damaged newer one it skipped (a save cut
    short) until training writes that step again."""
    model_dir = str(tmp_path / "model")
    code, log = _run(model_dir, str(tmp_path / "first.log"), max_steps=6, keep=KEEP + 1)
    assert code == 0 and saved_checkpoint_steps(model_dir) == [2, 4, 6], log
    cut_short = os.path.join(model_dir, "model.ckpt-8.data-00000-of-00001")
    shutil.copyfile(os.path.join(model_dir, "model.ckpt-6.data-00000-of-00001"), cut_short)
    cut_short_bytes = open(cut_short, "rb").read()
    code, log = _run(model_dir, str(tmp_path / "next.log"), max_steps=6)  # step 6 is on disk: no step, no save
    assert code == 0 and "nothing to train" in log, log
    assert "skipping damaged checkpoint(s): model.ckpt-8 (model.ckpt-8.index is missing)" in log
    assert "resuming from %s/model.ckpt-6 (step 6)" % model_dir in log
    assert saved_checkpoint_steps(model_dir) == [4, 6, 8]
    assert checkpoint_reader.checkpoint_problem(os.path.join(model_dir, "model.ckpt-6")) is None
    assert open(cut_short, "rb").read() == cut_short_bytes
    assert listed_checkpoint_steps(model_dir) == [4, 6]
