"""Shared test setup: the repo on sys.path, the official fixture's location, quiet TensorFlow."""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")
FIXTURE_DIR = os.path.join(SHARED_DIR, "fixtures", "official_b0")
NPU_DOUBLE_DIR = os.path.join(REPO_ROOT, "tests", "npu_double")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


@pytest.fixture(scope="session")
def fixture_dir():
    if not os.path.isdir(FIXTURE_DIR):
        pytest.fail("official fixture missing: expected %s (../shared beside the repo)" % FIXTURE_DIR)
    return FIXTURE_DIR

DEMO_DATA = os.path.join(REPO_ROOT, "data", "demo")


def run_python(args, extra_env=None, timeout=600, **kwargs):
    """Runs `python args...` from the repo root, as a user would, on the CPU; returns CompletedProcess."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra_env or {})
    return subprocess.run([sys.executable] + list(args), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout, **kwargs)
