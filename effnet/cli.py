"""What every command-line entry point shares (train.py, test.py, predict.py, freeze_graph.py, export.py).

One flag for which weights of a checkpoint to read, `--weights_variant=auto|ema|raw`, with the older names
kept as deprecated aliases that print one warning line.
"""
import sys

from absl import app, flags

# The older flags for --weights_variant, still taken from users' scripts: value -> weights variant.
DEPRECATED_WEIGHTS_FLAGS = {
    "use_ema": {"auto": "auto", "true": "ema", "false": "raw"},
    "pretrained_weights": {"auto": "auto", "ema": "ema", "raw": "raw"},
}


def define_weights_variant(help_text, aliases=("use_ema",)):
    """Defines --weights_variant=auto|ema|raw (see checkpoint_reader.WEIGHTS_VARIANTS) and the deprecated
    `aliases` (keys of DEPRECATED_WEIGHTS_FLAGS) that weights_variant() reads too."""
    from effnet.checkpoints import checkpoint_reader

    flags.DEFINE_enum("weights_variant", "auto", checkpoint_reader.WEIGHTS_VARIANTS,
                      help_text + " auto = the EMA shadows when the checkpoint has them, else the raw weights; "
                      "ema = the EMA shadows (an error without them); raw = the raw weights.")
    define_weights_aliases(aliases)


def define_weights_aliases(aliases):
    """Defines deprecated names of --weights_variant (keys of DEPRECATED_WEIGHTS_FLAGS)."""
    for alias in aliases:
        values = DEPRECATED_WEIGHTS_FLAGS[alias]
        renamed = ", ".join("%s = %s" % (old, new) for old, new in values.items() if old != new)
        flags.DEFINE_enum(alias, None, list(values), "Deprecated name of --weights_variant (%s)."
                          % (renamed or "the same values"))


def weights_variant():
    """--weights_variant, or the value of a deprecated alias given instead (one warning line on stderr, then
    the value is moved into --weights_variant, so later calls give it silently); an alias that contradicts
    an explicit --weights_variant is a usage error."""
    values = flags.FLAGS
    for alias, mapping in sorted(DEPRECATED_WEIGHTS_FLAGS.items()):
        if alias not in values or values[alias].value is None:
            continue
        old, new = values[alias].value, mapping[values[alias].value]
        if values["weights_variant"].present and new != values.weights_variant:
            raise app.UsageError("--%s=%s contradicts --weights_variant=%s: pass --weights_variant alone"
                                 % (alias, old, values.weights_variant))
        print("warning: --%s=%s is deprecated: pass --weights_variant=%s" % (alias, old, new), file=sys.stderr)
        values[alias].value = None
        values.weights_variant = new
    return values.weights_variant
