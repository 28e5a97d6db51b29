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



def _gradients(build, input_shape, overrides):
    """Gradients of sum(build(x) * r) w.r.t. x and build's own tensors, and the backprop op types used."""
    rng = np.random.RandomState(1)
    with tf.Graph().as_default() as graph:
        inputs = tf.constant(rng.normal(1.0, 2.0, size=input_shape).astype(np.float32))
        with graph.gradient_override_map(overrides):
            outputs, parameters = build(inputs, rng)
        weights = tf.constant(rng.normal(size=outputs.shape.as_list()).astype(np.float32))
        gradients = tf.gradients(tf.reduce_sum(outputs * weights), [inputs] + parameters)
        backprop_ops = {op.type for op in graph.get_operations() if "Backprop" in op.type or "Grad" in op.type}
        with tf.Session() as sess:
            return sess.run(gradients), backprop_ops


def _conv(kernel_shape, strides):
    def build(inputs, rng):
        kernel = tf.constant(rng.normal(size=kernel_shape).astype(np.float32))
        return tf.nn.conv2d(inputs, kernel, strides, "SAME"), [kernel]
    return build


def _batch_norm(is_training):
    def build(inputs, rng):
        channels = inputs.shape[-1]
        scale = tf.constant(rng.normal(1.0, 0.3, channels).astype(np.float32))
        offset = tf.constant(rng.normal(size=channels).astype(np.float32))
        statistics = {} if is_training else {"mean": tf.ones([channels]), "variance": tf.fill([channels], 2.0)}
        outputs, _, _ = tf.nn.fused_batch_norm(inputs, scale, offset, epsilon=1.001e-5, is_training=is_training,
                                               **statistics)
        return outputs, [scale, offset]
    return build


@pytest.mark.parametrize("build,input_shape,replaced", [
    (_conv((1, 1, 24, 40), 1), (3, 9, 9, 24), True),
    (_conv((1, 1, 24, 40), 2), (3, 9, 9, 24), False),
    (_conv((3, 3, 8, 16), 1), (3, 9, 9, 8), False),
    (_batch_norm(is_training=True), (4, 7, 7, 16), True),
    (_batch_norm(is_training=True), (1, 1, 1, 16), True),
    (_batch_norm(is_training=False), (4, 7, 7, 16), False),
], ids=["conv1x1", "conv1x1_stride2", "conv3x3", "batch_norm", "batch_norm_one_value", "batch_norm_inference"])
def test_cpu_gradients_equal_tensorflows(build, input_shape, replaced):
    """The CPU device's gradients (1x1 convolutions as matrix products, batch norm from channel sums) give
    TensorFlow's values where they apply; elsewhere TensorFlow's own backprop ops stay."""
    overrides = device.for_name("cpu", device_flags(), training=True).gradient_overrides()
    ours, our_ops = _gradients(build, input_shape, overrides)
    reference, reference_ops = _gradients(build, input_shape, {})
    for our_gradient, reference_gradient in zip(ours, reference):
        np.testing.assert_allclose(our_gradient, reference_gradient, rtol=1e-4, atol=1e-4)
    assert reference_ops and (our_ops.isdisjoint(reference_ops) if replaced else our_ops == reference_ops), our_ops


def test_only_the_cpu_replaces_gradients():
    """GPU (cuDNN) and NPU (CANN) keep TensorFlow's gradients: their backprop kernels are fast; on the CPU
    --nocpu_fast_gradients does too."""
    for name in ("gpu", "npu"):
        assert device.for_name(name, device_flags(), training=True).gradient_overrides() == {}
    assert device.for_name("cpu", device_flags(cpu_fast_gradients=False)).gradient_overrides() == {}
    assert device.for_name("cpu", device_flags()).gradient_overrides()
