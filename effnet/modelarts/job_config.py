"""The parameters users change for a ModelArts job (configs/modelarts.yaml) and the test-script
arguments they become.

The file is read without PyYAML (not a dependency): one `key: value` per line, `#` comments, values
empty (= the test script's default), true/false, numbers or strings (quotes optional). That subset
is valid YAML, so the file also reads as YAML elsewhere.
"""
import re

_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:(?:\s+(.*?))?\s*$")
_QUOTED = re.compile(r"""^(?:"([^"]*)"|'([^']*)')(?:\s+#.*)?$""")


class JobConfigError(ValueError):
    """The job configuration file cannot be used; the message names the line and the fix."""


def _positive(cast):
    """A parser of positive numbers of type `cast` (ValueError otherwise)."""
    def parse(text):
        value = cast(text)
        if not value > 0:
            raise ValueError(text)
        return value
    return parse


def _boolean(text):
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise ValueError
    return lowered == "true"


# key: (parser, what a good value looks like, the test-script option it becomes or None for the entry's own)
KEYS = {
    "model_name": (str, "a name such as efficientnet-b0", "--model_name"),
    "num_classes": (_positive(int), "a positive integer", "--num_classes"),
    "pretrained_path": (str, "a checkpoint folder or prefix", "--ckpt_path"),
    "epochs": (_positive(float), "a positive number", "--train_epochs"),
    "train_steps": (_positive(int), "a positive integer", "--train_steps"),
    "batch_size": (_positive(int), "a positive integer", "--batch_size"),
    "learning_rate": (_positive(float), "a positive number", "--learning_rate"),
    "precision_mode": (str, "a CANN precision mode such as allow_mix_precision", "--precision_mode"),
    "freeze_pb": (_boolean, "true or false", None),
}
# Run length: a user's --train_steps or --train_epochs replaces both of the file's.
RUN_LENGTH_OPTIONS = ("--train_steps", "--train_epochs")


def _value_text(raw):
    """The value of a line without its comment and quotes ('' when empty)."""
    if raw is None:
        return ""
    quoted = _QUOTED.match(raw)
    if quoted:
        return quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
    return re.split(r"(?:^|\s)#", raw, maxsplit=1)[0].strip()


def parse(text, source="the job configuration"):
    """{key: value} of the keys with a value; raises JobConfigError for anything outside the subset."""
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise JobConfigError("%s line %d: %r is not a `key: value` line (lists, nesting and indentation are "
                                 "not read)" % (source, number, line.strip()))
        key, text_value = match.group(1), _value_text(match.group(2))
        if key not in KEYS:
            raise JobConfigError("%s line %d: unknown key %r: use %s" % (source, number, key, ", ".join(sorted(KEYS))))
        if key in values:
            raise JobConfigError("%s line %d: %s is set twice" % (source, number, key))
        if text_value == "":
            continue
        parser, expected, _ = KEYS[key]
        try:
            values[key] = parser(text_value)
        except ValueError:
            raise JobConfigError("%s line %d: %s: %r must be %s" % (source, number, key, text_value, expected))
    if "epochs" in values and "train_steps" in values:
        raise JobConfigError("%s: set epochs or train_steps, not both" % source)
    return values


def read(path):
    try:
        with open(path) as handle:
            return parse(handle.read(), path)
    except (IOError, OSError) as error:
        raise JobConfigError("cannot read the job configuration %s (%s): pass --config_file=FILE" % (path, error))


def _given(option, args):
    return any(arg == option or arg.startswith(option + "=") for arg in args)


def script_arguments(values, user_args):
    """Test-script arguments for the file's values (pretrained_path already made local), then user_args,
    which win: an option the user gives is not taken from the file."""
    user_run_length = any(_given(option, user_args) for option in RUN_LENGTH_OPTIONS)
    args = []
    for key in sorted(values):
        option = KEYS[key][2]
        if option is None or _given(option, user_args) or (user_run_length and option in RUN_LENGTH_OPTIONS):
            continue
        args.append("%s=%s" % (option, values[key]))
    return args + list(user_args)
