"""bench/train_step.py under TensorFlow 1.15 and 2.x side by side on this machine, as a ratio.

    python bench/tf_versions.py [--rounds=2] [-- train_step.py flags, e.g. --batch_size=16 --image_size=224]

Runs each version in turn (alternating, `--rounds` times, so a busy shared machine hurts both alike)
with .venv (TF 1.15) and .venv-tf2 (TF 2.x), or the pythons given by --tf1_python / --tf2_python,
and prints the best images/s of each and TF 2.x / TF 1.15.
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RATE = re.compile(r"([0-9.]+) images/s")


def _run(python, extra_args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    process = subprocess.run([python, os.path.join(ROOT, "bench", "train_step.py")] + extra_args, cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    match = _RATE.search(process.stdout)
    if process.returncode != 0 or not match:
        sys.exit("error: %s bench/train_step.py failed (exit %d): %s" % (python, process.returncode,
                                                                         process.stderr.strip()[-2000:]))
    return process.stdout.strip().splitlines()[0], float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf1_python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    parser.add_argument("--tf2_python", default=os.path.join(ROOT, ".venv-tf2", "bin", "python"))
    parser.add_argument("--rounds", type=int, default=1)
    args, train_step_args = parser.parse_known_args()
    train_step_args = [a for a in train_step_args if a != "--"]
    for python in (args.tf1_python, args.tf2_python):
        if not os.path.exists(python):
            sys.exit("error: %s not found: build it with EFFICIENTNET_TF=1 / EFFICIENTNET_TF=2 "
                     "bash -c 'source scripts/env.sh'" % python)
    best = {}
    for _ in range(args.rounds):
        for label, python in (("TF 1.15", args.tf1_python), ("TF 2.x", args.tf2_python)):
            description, rate = _run(python, train_step_args)
            print("%-8s %s: %.2f images/s" % (label, description, rate), flush=True)
            best[label] = max(best.get(label, 0.0), rate)
    print("best: TF 1.15 %.2f images/s, TF 2.x %.2f images/s, TF 2.x / TF 1.15 = %.2f"
          % (best["TF 1.15"], best["TF 2.x"], best["TF 2.x"] / best["TF 1.15"]))


if __name__ == "__main__":
    main()
