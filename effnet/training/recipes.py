"""Training recipes as data, and the train.py flags a launcher passes for one.

A recipe is a set of train.py flags plus a learning rate meant for a reference global batch. The
launchers choose one with --recipe (or by the data: the bundled demo data picks `demo`) and scale
it to their number of devices with scaled_batch(); a flag the user gives wins over the recipe's.
"""
import collections
import os

Recipe = collections.namedtuple("Recipe", [
    "description",
    "flags",            # train.py flags (name -> value) besides batch size and learning rate
    "learning_rate",    # for a global batch of reference_batch images
    "reference_batch",
    "device_batch",     # images per device; None: reference_batch split over the devices
    "perf_steps",       # length of a ModelZoo performance run
])

RECIPES = collections.OrderedDict([
    ("demo", Recipe(
        "the bundled 10-digit data at 32x32: B0 from scratch, >= 0.95 top-1 in a few minutes on 2 CPU cores",
        collections.OrderedDict([("image_size", 32), ("optimizer", "adam"), ("lr_schedule", "cosine"),
                                 ("max_steps", 1000), ("min_crop_area", 1.0), ("random_flip", False),
                                 ("log_every_n_steps", 100), ("save_checkpoints_steps", 500)]),
        learning_rate=3e-3, reference_batch=32, device_batch=None, perf_steps=60)),
    ("official", Recipe(
        "the official B0 ImageNet recipe: RMSProp, 5 warm-up epochs, x0.97 every 2.4 epochs, 350 epochs",
        collections.OrderedDict([("optimizer", "rmsprop"), ("lr_schedule", "exponential"), ("warmup_epochs", 5),
                                 ("epochs", 350), ("log_every_n_steps", 100), ("save_checkpoints_steps", 5000)]),
        learning_rate=0.016, reference_batch=256, device_batch=256, perf_steps=1000)),
    ("finetune", Recipe(
        "train.py's defaults, meant for fine-tuning pretrained weights (add --epochs)",
        collections.OrderedDict(),
        learning_rate=0.01, reference_batch=64, device_batch=64, perf_steps=1000)),
])
# Flags that set the run length: a user's --epochs or --max_steps replaces both of the recipe's.
RUN_LENGTH_FLAGS = ("epochs", "max_steps")
DEMO_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "data", "demo")


class RecipeError(ValueError):
    """An unknown recipe name; the message lists the known ones."""


def choose(name, data_path, default):
    """The recipe name for --recipe=name ('auto': `demo` on the bundled demo data, else `default`)."""
    if name == "auto":
        is_demo = bool(data_path) and os.path.realpath(data_path) == os.path.realpath(DEMO_DATA)
        return "demo" if is_demo else default
    if name not in RECIPES:
        raise RecipeError("--recipe=%s: use auto, %s" % (name, ", ".join(RECIPES)))
    return name


def scaled_batch(recipe, rank_size, batch_size=None):
    """(images per device, learning rate) on rank_size devices: the learning rate follows the global
    batch (batch_size x rank_size) linearly from the recipe's reference batch."""
    if batch_size is None:
        batch_size = recipe.device_batch or max(recipe.reference_batch // rank_size, 1)
    return batch_size, recipe.learning_rate * batch_size * rank_size / recipe.reference_batch


def _flag_name(arg):
    """'batch_size' for '--batch_size=8', 'random_flip' for '--norandom_flip'; None for non-flags."""
    if not arg.startswith("--"):
        return None
    return arg[2:].split("=", 1)[0]


def _format(name, value):
    if isinstance(value, bool):
        return "--%s" % name if value else "--no%s" % name
    return "--%s=%s" % (name, "%g" % value if isinstance(value, float) else value)


def train_flags(recipe, rank_size, user_args):
    """train.py's arguments: the recipe's flags that user_args do not set, its scaled batch size and
    learning rate, then user_args unchanged (so the user's flags also win on the command line)."""
    given = set()
    for arg in user_args:
        name = _flag_name(arg)
        if name is not None:
            given.update((name, name[2:]) if name.startswith("no") else (name,))
    batch_text = [arg.split("=", 1)[1] for arg in user_args if _flag_name(arg) == "batch_size" and "=" in arg]
    # A malformed --batch_size is left for train.py to reject.
    user_batch = int(batch_text[-1]) if batch_text and batch_text[-1].isdigit() and int(batch_text[-1]) > 0 else None
    batch_size, learning_rate = scaled_batch(recipe, rank_size, user_batch)
    flags = collections.OrderedDict(recipe.flags)
    flags.update(batch_size=batch_size, learning_rate=learning_rate)
    drop_run_length = bool(given & set(RUN_LENGTH_FLAGS))
    return ([_format(name, value) for name, value in flags.items()
             if name not in given and not (drop_run_length and name in RUN_LENGTH_FLAGS)] + list(user_args))


def modelzoo_flags(recipe, rank_size, kind, train_steps=None, train_epochs=None, batch_size=None, extra_args=()):
    """train.py's arguments for a ModelZoo test script run (kind 'acc' or 'perf') with its options.

    A performance run without a length trains recipe.perf_steps steps and saves no checkpoint inside
    the timed steps; short runs log about ten times (the first interval, graph building, is not timed)
    and, on the NPU, run one loop per log line.
    """
    if kind == "perf" and not train_steps and not train_epochs:
        train_steps = recipe.perf_steps
    args = ["--batch_size=%d" % batch_size] if batch_size else []
    log_every = recipe.flags.get("log_every_n_steps", 100)
    if train_steps:
        args.append("--max_steps=%d" % train_steps)
        log_every = max(1, min(train_steps // 10, log_every))
    elif train_epochs:
        args += ["--epochs=%g" % train_epochs, "--max_steps=0"]
    args.append("--log_every_n_steps=%d" % log_every)
    if kind == "perf":
        args.append("--save_checkpoints_steps=0")
        if log_every < 100:
            args.append("--iterations_per_loop=%d" % log_every)
    return train_flags(recipe, rank_size, args + list(extra_args))
