"""effnet/cli.py: the one exit convention of every CLI and the --weights_variant flag with its old names."""
import subprocess
import sys

import pytest
from absl import app, flags

from conftest import REPO_ROOT, python_env
from effnet import cli

SCRIPT = """
import sys
from effnet import cli

class BadInput(ValueError):
    pass

def main(argv):
    what = argv[1] if len(argv) > 1 else "ok"
    if what == "bad":
        raise BadInput("the input is bad: pass a good one")
    if what == "ctrl-c":
        raise KeyboardInterrupt()
    if what == "other":
        raise RuntimeError("not a typed error")
    if what == "code":
        return 3
    print("ran with %s" % what)

cli.run(main, (BadInput,), arguments="--arguments" in sys.argv, argv=[a for a in sys.argv if a != "--arguments"])
"""


def run_script(*args):
    return subprocess.run([sys.executable, "-c", SCRIPT] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=python_env(), cwd=REPO_ROOT)


def test_typed_error_is_one_line_and_exit_code_1():
    result = run_script("--arguments", "bad")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "error: the input is bad: pass a good one\n")


def test_ctrl_c_is_one_line_and_exit_code_130():
    result = run_script("--arguments", "ctrl-c")
    assert (result.returncode, result.stderr) == (130, "interrupted\n")


def test_other_errors_keep_their_traceback_and_main_s_code_is_the_exit_code():
    result = run_script("--arguments", "other")
    assert result.returncode == 1 and "Traceback" in result.stderr and "RuntimeError" in result.stderr
    assert run_script("--arguments", "code").returncode == 3
    result = run_script("--arguments", "fine")
    assert (result.returncode, result.stdout) == (0, "ran with fine\n")


def test_positional_arguments_are_a_usage_error_unless_taken():
    result = run_script("stray")
    assert result.returncode == 1 and "unexpected arguments: stray" in result.stderr


@pytest.fixture
def flag_values():
    values = flags.FlagValues()
    cli.define_weights_variant("Which weights.", aliases=("use_ema", "pretrained_weights"), flag_values=values)
    return values


@pytest.mark.parametrize("args, expected, warning", [
    ([], "auto", ""),
    (["--weights_variant=raw"], "raw", ""),
    (["--use_ema=true"], "ema", "warning: --use_ema=true is deprecated: pass --weights_variant=ema\n"),
    (["--use_ema=false"], "raw", "warning: --use_ema=false is deprecated: pass --weights_variant=raw\n"),
    (["--pretrained_weights=raw"], "raw",
     "warning: --pretrained_weights=raw is deprecated: pass --weights_variant=raw\n"),
    (["--use_ema=false", "--weights_variant=raw"], "raw",
     "warning: --use_ema=false is deprecated: pass --weights_variant=raw\n"),
])
def test_weights_variant_and_its_deprecated_names(flag_values, capsys, args, expected, warning):
    flag_values(["prog"] + args)
    assert cli.weights_variant(flag_values) == expected
    assert cli.weights_variant(flag_values) == expected  # read again: the warning is not repeated
    assert capsys.readouterr().err == warning


def test_a_deprecated_name_contradicting_weights_variant_is_a_usage_error(flag_values):
    flag_values(["prog", "--use_ema=true", "--weights_variant=raw"])
    with pytest.raises(app.UsageError, match="--use_ema=true contradicts --weights_variant=raw"):
        cli.weights_variant(flag_values)


IMPORT_EVERYTHING = """
import importlib, pkgutil
from absl import flags
import effnet
for name in ("train", "test", "predict", "export", "freeze_graph", "convert_weights", "make_tfrecords",
             "modelarts_entry_acc", "modelarts_entry_perf"):
    importlib.import_module(name)
for module in pkgutil.walk_packages(effnet.__path__, "effnet."):
    importlib.import_module(module.name)
print(" ".join(sorted(flags.FLAGS.flags_by_module_dict())))
"""


def test_importing_the_package_defines_no_flag():
    """Every module defines its flags in define_flags(), which only an entry point calls (effnet/common_flags.py)."""
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=python_env(), cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    owners = result.stdout.split()
    assert [owner for owner in owners if not owner.startswith(("absl.", "tensorflow."))] == [], owners
