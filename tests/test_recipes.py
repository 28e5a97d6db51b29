"""The training recipes (effnet/training/recipes.py) and the train.py arguments the launchers get from
them (effnet/launch/train_args.py)."""
import os
import subprocess
import sys

import pytest

from conftest import DEMO_DATA, REPO_ROOT
from effnet.training import recipes


def flag_values(args):
    """{name: value} of --name=value arguments (the last one wins, as in absl); --noname gives 'False'."""
    values = {}
    for arg in args:
        name, _, value = arg[2:].partition("=")
        if not value and name.startswith("no"):
            name, value = name[2:], "False"
        values[name] = value
    return values


def test_recipes_hold_the_documented_values():
    demo, official, finetune = (recipes.RECIPES[name] for name in ("demo", "official", "finetune"))
    assert dict(demo.flags) == {"image_size": 32, "optimizer": "adam", "lr_schedule": "cosine", "max_steps": 1000,
                                "min_crop_area": 1.0, "random_flip": False, "log_every_n_steps": 100,
                                "save_checkpoints_steps": 500}
    assert (demo.learning_rate, demo.reference_batch, demo.device_batch, demo.perf_steps) == (3e-3, 32, None, 60)
    assert official.flags["optimizer"] == "rmsprop" and official.flags["epochs"] == 350
    assert (official.learning_rate, official.reference_batch, official.device_batch) == (0.016, 256, 256)
    assert not finetune.flags and (finetune.learning_rate, finetune.device_batch) == (0.01, 64)


@pytest.mark.parametrize("name, rank_size, batch_size, expected", [
    ("demo", 1, None, (32, 3e-3)),
    ("demo", 8, None, (4, 3e-3)),          # the global batch of 32 split over the devices
    ("demo", 3, None, (10, 3e-3 * 30 / 32)),  # 32 does not split evenly: the rate follows the global batch
    ("demo", 64, None, (1, 3e-3 * 2)),
    ("demo", 1, 8, (8, 3e-3 / 4)),
    ("official", 8, None, (256, 0.128)),   # 0.016 x 2048 / 256, the official 8-device rate
    ("official", 1, 128, (128, 0.008)),
    ("finetune", 2, None, (64, 0.02)),
])
def test_scaled_batch_follows_the_global_batch(name, rank_size, batch_size, expected):
    batch, rate = recipes.scaled_batch(recipes.RECIPES[name], rank_size, batch_size)
    assert batch == expected[0] and rate == pytest.approx(expected[1])


def test_choose_by_flag_and_by_data(tmp_path):
    assert recipes.choose("auto", DEMO_DATA, "finetune") == "demo"
    link = tmp_path / "demo_link"
    link.symlink_to(DEMO_DATA)
    assert recipes.choose("auto", str(link), "official") == "demo"  # the same folder by another path
    assert recipes.choose("auto", str(tmp_path), "official") == "official"
    assert recipes.choose("finetune", DEMO_DATA, "official") == "finetune"
    with pytest.raises(recipes.RecipeError, match="--recipe=imagenet: use auto, demo, official, finetune"):
        recipes.choose("imagenet", DEMO_DATA, "official")


def test_user_flags_win_and_a_user_run_length_replaces_the_recipe_s():
    demo = recipes.RECIPES["demo"]
    args = recipes.train_flags(demo, 1, ["--epochs=2", "--random_flip", "--optimizer=sgd"])
    values = flag_values(args)
    assert "max_steps" not in values and values["epochs"] == "2"
    assert args.count("--random_flip") == 1 and "--norandom_flip" not in args
    assert [arg for arg in args if arg.startswith("--optimizer=")] == ["--optimizer=sgd"]
    assert args[-3:] == ["--epochs=2", "--random_flip", "--optimizer=sgd"]
    official = flag_values(recipes.train_flags(recipes.RECIPES["official"], 1, ["--max_steps=10"]))
    assert "epochs" not in official and official["max_steps"] == "10"
    rate = flag_values(recipes.train_flags(demo, 1, ["--learning_rate=0.1", "--batch_size=16"]))
    assert rate["learning_rate"] == "0.1" and rate["batch_size"] == "16"
    assert flag_values(recipes.train_flags(demo, 1, ["--batch_size=16"]))["learning_rate"] == "0.0015"


@pytest.mark.parametrize("kind, options, expected", [
    ("perf", {}, {"max_steps": "60", "log_every_n_steps": "6", "save_checkpoints_steps": "0",
                  "iterations_per_loop": "6", "batch_size": "32"}),
    ("acc", {}, {"max_steps": "1000", "log_every_n_steps": "100", "save_checkpoints_steps": "500"}),
    ("acc", {"train_steps": 4, "batch_size": 16}, {"max_steps": "4", "log_every_n_steps": "1", "batch_size": "16",
                                                   "learning_rate": "0.0015"}),
    ("acc", {"train_epochs": 0.5}, {"epochs": "0.5", "max_steps": "0", "log_every_n_steps": "100"}),
])
def test_modelzoo_runs_on_the_demo_recipe(kind, options, expected):
    values = flag_values(recipes.modelzoo_flags(recipes.RECIPES["demo"], 1, kind, **options))
    assert {name: values.get(name) for name in expected} == expected


def test_modelzoo_performance_run_of_the_official_recipe_on_8_devices():
    values = flag_values(recipes.modelzoo_flags(recipes.RECIPES["official"], 8, "perf"))
    assert (values["max_steps"], values["batch_size"], values["learning_rate"]) == ("1000", "256", "0.128")
    assert values["save_checkpoints_steps"] == "0" and "iterations_per_loop" not in values
    assert "epochs" not in values  # the run length is the performance run's


def run_resolver(*args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "effnet.launch.train_args"] + list(args), cwd=str(REPO_ROOT),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)


def test_resolver_prints_the_recipe_and_the_launcher_s_arguments():
    result = run_resolver("--data_path=%s" % DEMO_DATA, "--rank_size=2", "--", "--recipe=official", "--epochs=1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "official" and "--recipe=official" not in lines
    values = flag_values(lines[1:])
    assert (values["batch_size"], values["learning_rate"], values["epochs"]) == ("256", "0.032", "1")
    result = run_resolver("--data_path=%s" % DEMO_DATA, "--rank_size=2", "--modelzoo=perf", "--train_steps=20", "--")
    lines = result.stdout.splitlines()
    assert lines[0] == "demo" and flag_values(lines[1:])["batch_size"] == "16"
    assert flag_values(lines[1:])["max_steps"] == "20"


def test_resolver_rejects_an_unknown_recipe_in_one_line():
    result = run_resolver("--data_path=%s" % DEMO_DATA, "--", "--recipe=imagenet")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == "error: --recipe=imagenet: use auto, demo, official, finetune"
