"""Prints the recipe name, then train.py's arguments one per line, for the shell launchers.

  python -m effnet.launch.train_args --data_path=DIR --rank_size=N [--default_recipe=finetune]
      [--modelzoo=acc|perf --train_steps=N --train_epochs=E --batch_size=N] -- USER_ARGS...

USER_ARGS are the flags the user gave the launcher; --recipe=NAME among them chooses the recipe
(default auto: `demo` on the bundled demo data, else --default_recipe) and is not passed on.
"""
from absl import flags

from effnet import cli
from effnet.training import recipes

FLAGS = flags.FLAGS


def define_flags():
    """Defines the flags (only when run as a script: train.py's flags share some names)."""
    flags.DEFINE_string("data_path", None, "The training data folder (the demo data picks the demo recipe).")
    flags.DEFINE_integer("rank_size", 1, "Devices (processes) of the run.", lower_bound=1)
    flags.DEFINE_enum("default_recipe", "finetune", list(recipes.RECIPES),
                      "The recipe for --recipe=auto off the demo data.")
    flags.DEFINE_enum("modelzoo", None, ("acc", "perf"), "A ModelZoo test-script run of this kind.")
    flags.DEFINE_integer("train_steps", 0, "ModelZoo --train_steps (0: not given).")
    flags.DEFINE_float("train_epochs", 0, "ModelZoo --train_epochs (0: not given).")
    flags.DEFINE_integer("batch_size", 0, "ModelZoo --batch_size (0: the recipe's).")


def resolve(user_args):
    """(recipe name, train.py arguments) for the flags' values and the user's launcher arguments."""
    names = [arg.split("=", 1)[1] for arg in user_args if arg.startswith("--recipe=")]
    train_args = [arg for arg in user_args if not arg.startswith("--recipe=")]
    name = recipes.choose(names[-1] if names else "auto", FLAGS.data_path, FLAGS.default_recipe)
    recipe = recipes.RECIPES[name]
    if FLAGS.modelzoo:
        return name, recipes.modelzoo_flags(recipe, FLAGS.rank_size, FLAGS.modelzoo, FLAGS.train_steps or None,
                                            FLAGS.train_epochs or None, FLAGS.batch_size or None, train_args)
    return name, recipes.train_flags(recipe, FLAGS.rank_size, train_args)


def main(argv):
    name, args = resolve(argv[1:])
    print("\n".join([name] + args))


if __name__ == "__main__":
    cli.run(main, (recipes.RecipeError,), define_flags, arguments=True)
