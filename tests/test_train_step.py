"""The flag-free training step (effnet/training/train_step.py) that train.py and bench/train_step.py build."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from conftest import device_flags, run_python
from effnet.devices import device
from effnet.training import train_step


def _run_steps(settings, steps=2):
    """Builds Lite0 (32 px, 4 classes) on a fixed batch, runs `steps` steps; returns values before and after."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        rng = np.random.RandomState(0)
        images = tf.constant(rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32))
        labels = tf.constant(np.arange(4, dtype=np.int32))
        dev = device.for_name("cpu", device_flags(), training=True)
        step = train_step.TrainStep(images, labels, dev, "efficientnet-lite0", 4, settings, steps_per_epoch=10,
                                    total_steps=10)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            before = sess.run(step.model_variables)
            losses = [sess.run([step.train_op, step.loss])[1] for _ in range(steps)]
            after = sess.run(step.model_variables)
            result = {"losses": losses, "global_step": sess.run(step.global_step), "shadows": len(step.shadows),
                      "trainable": len(tf.trainable_variables()), "names": [v.op.name for v in step.model_variables],
                      "before": before, "after": after}
    return result


def test_the_step_trains_and_keeps_ema_shadows():
    result = _run_steps(train_step.StepSettings(optimizer="sgd", learning_rate=0.1))
    assert result["global_step"] == 2
    assert all(np.isfinite(result["losses"]))
    moving = sum("moving_" in name for name in result["names"])
    assert result["shadows"] == result["trainable"] + moving > 0


def test_freeze_base_trains_only_the_head_and_no_ema_without_decay():
    settings = train_step.StepSettings(optimizer="sgd", learning_rate=0.1, freeze_base=True, moving_average_decay=0)
    result = _run_steps(settings)
    changed = {name for name, old, new in zip(result["names"], result["before"], result["after"])
               if not np.array_equal(old, new)}
    assert changed and all("/head/dense/" in name for name in changed), sorted(changed)
    assert result["shadows"] == 0


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        train_step.build_optimizer("lamb", 0.1, 0.9)


def test_step_settings_defaults_are_train_py_flag_defaults():
    """StepSettings() is what bench/train_step.py times: it must be the step train.py runs by default."""
    result = run_python(["-c", "import sys; from absl import flags; import train; train.define_flags(); "
                               "flags.FLAGS(['train.py']); print(repr(tuple(train.step_settings())))"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == repr(tuple(train_step.StepSettings()))
