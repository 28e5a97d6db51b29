"""What every command-line entry point shares (train.py, test.py, predict.py, freeze_graph.py, export.py,
make_tfrecords.py, convert_weights.py, the ModelArts entries, the effnet.launch tools, make_demo_data.py;
bench/ keeps its own, and scripts/make_rank_table.py, an argparse tool without TensorFlow, exits 2 as
argparse does).

One exit convention:
- a run that cannot do what it was asked prints one line `error: <message>` on stderr and exits 1 (`fail`);
  `run` does this for the package's typed errors, so a main raises them and never prints or exits itself;
- Ctrl-C prints one `interrupted...` line and exits 130 (`interrupted`; train.py's signal stops exit 143/130
  through the same function);
- usage errors (an unknown flag, a bad flag value, an unexpected argument) are absl's, also exit code 1;
- success is exit code 0, or the code main returns (export.py returns 1 when a format failed its check).

One flag for which weights of a checkpoint to read, `--weights_variant=auto|ema|raw`, with the older names
kept as deprecated aliases that print one warning line.
"""
import sys

from absl import app, flags

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
INTERRUPTED = "interrupted"

# The older flags for --weights_variant, still taken from users' scripts: value -> weights variant.
DEPRECATED_WEIGHTS_FLAGS = {
    "use_ema": {"auto": "auto", "true": "ema", "false": "raw"},
    "pretrained_weights": {"auto": "auto", "ema": "ema", "raw": "raw"},
}


def fail(message, code=EXIT_ERROR):
    """Ends the run with one line `error: <message>` on stderr and exit code `code`."""
    print("error: %s" % message, file=sys.stderr)
    sys.stderr.flush()
    sys.exit(code)


def interrupted(message=INTERRUPTED, code=EXIT_INTERRUPTED):
    """Ends a run stopped by a signal with one line on stderr and exit code `code` (130 for Ctrl-C)."""
    print(message, file=sys.stderr)
    sys.stderr.flush()
    sys.exit(code)


def run(main, errors=(), define_flags=(), arguments=False, interrupted_message=INTERRUPTED, **app_kwargs):
    """app.run(main) after calling each of `define_flags`, with the exit convention above: an exception of one
    of the `errors` types ends the run through `fail`, KeyboardInterrupt through `interrupted`. Positional
    arguments are a usage error unless `arguments`."""
    for define in define_flags if isinstance(define_flags, (list, tuple)) else (define_flags,):
        define()

    def guarded(argv):
        if not arguments and len(argv) > 1:
            raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
        try:
            return main(argv)
        except tuple(errors) as error:
            fail(error)
        except KeyboardInterrupt:
            interrupted(interrupted_message)

    app.run(guarded, **app_kwargs)


def define_weights_variant(help_text, aliases=("use_ema",), flag_values=flags.FLAGS):
    """Defines --weights_variant=auto|ema|raw (see checkpoint_reader.WEIGHTS_VARIANTS) and the deprecated
    `aliases` (keys of DEPRECATED_WEIGHTS_FLAGS) that weights_variant() reads too."""
    from effnet.checkpoints import checkpoint_reader

    flags.DEFINE_enum("weights_variant", "auto", checkpoint_reader.WEIGHTS_VARIANTS,
                      help_text + " auto = the EMA shadows when the checkpoint has them, else the raw weights; "
                      "ema = the EMA shadows (an error without them); raw = the raw weights.",
                      flag_values=flag_values)
    define_weights_aliases(aliases, flag_values)


def define_weights_aliases(aliases, flag_values=flags.FLAGS):
    """Defines deprecated names of --weights_variant (keys of DEPRECATED_WEIGHTS_FLAGS)."""
    for alias in aliases:
        values = DEPRECATED_WEIGHTS_FLAGS[alias]
        renamed = ", ".join("%s = %s" % (old, new) for old, new in values.items() if old != new)
        flags.DEFINE_enum(alias, None, list(values), "Deprecated name of --weights_variant (%s)."
                          % (renamed or "the same values"), flag_values=flag_values)


def weights_variant(flag_values=flags.FLAGS):
    """--weights_variant, or the value of a deprecated alias given instead (one warning line on stderr, then
    the value is moved into --weights_variant, so later calls give it silently); an alias that contradicts
    an explicit --weights_variant is a usage error."""
    values = flag_values
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
