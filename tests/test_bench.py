"""bench/peers.py runs on a machine without the official checkout or PyTorch, and says what it skipped."""
import re

from conftest import run_python

TINY = ["--image_size=32", "--batch_size=2", "--rounds=2", "--steps=1", "--warmup_steps=1",
        "--torch_python=/nonexistent/python"]


def test_peers_times_this_package_and_skips_missing_contenders():
    result = run_python(["bench/peers.py"] + TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "official: skipped, give --official_dir" in out
    assert "pytorch: skipped, /nonexistent/python not found" in out
    assert len(re.findall(r"^round \d: package [\d.]+, package_tf_gradients [\d.]+$", out, re.M)) == 2, out
    assert re.search(r"^  package / package_tf_gradients +[\d.]+x$", out, re.M), out


def test_peers_names_a_wrong_official_dir(tmp_path):
    result = run_python(["bench/peers.py", "--official_dir=%s" % tmp_path] + TINY)
    assert result.returncode == 1
    assert "error: --official_dir: %s has no efficientnet_builder.py" % tmp_path in result.stderr, result.stderr
