"""The EfficientNet network as a subclassed `tf.keras.Model`.

Layers are TF1 `tf.layers` objects so that each one takes its variable scope when first
called: that is what gives the official checkpoint names (`blocks_3/conv2d_1/kernel`,
`tpu_batch_normalization_2/moving_mean`, ...), with suffixes assigned in call order.
"""
import collections
import math

import tensorflow.compat.v1 as tf

from effnet import tf_compat

GlobalParams = collections.namedtuple("GlobalParams", [
    "batch_norm_momentum", "batch_norm_epsilon", "dropout_rate", "data_format", "num_classes",
    "width_coefficient", "depth_coefficient", "depth_divisor", "min_depth", "survival_prob",
    "relu_fn", "use_se", "local_pooling", "fix_head_stem", "clip_projection_output", "dropout_fn",
])
GlobalParams.__new__.__defaults__ = (None,) * len(GlobalParams._fields)

BlockArgs = collections.namedtuple("BlockArgs", [
    "kernel_size", "num_repeat", "input_filters", "output_filters", "expand_ratio", "id_skip",
    "strides", "se_ratio", "conv_type", "fused_conv", "space2depth", "condconv", "activation",
])
BlockArgs.__new__.__defaults__ = (None,) * len(BlockArgs._fields)

_ACTIVATIONS = {0: tf.nn.relu, 1: tf_compat.swish}


def round_filters(filters, global_params, skip=False):
    """Scales a channel count by the width coefficient, to a multiple of depth_divisor.

    `skip` keeps the count as it is (lite models fix their stem and head widths).
    """
    multiplier = global_params.width_coefficient
    if skip or not multiplier:
        return filters
    divisor = global_params.depth_divisor
    min_depth = global_params.min_depth or divisor
    scaled = filters * multiplier
    new_filters = max(min_depth, int(scaled + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * scaled:
        new_filters += divisor
    return int(new_filters)


def round_repeats(repeats, global_params, skip=False):
    """Scales a stage's repeat count by the depth coefficient, rounding up."""
    multiplier = global_params.depth_coefficient
    if skip or not multiplier:
        return repeats
    return int(math.ceil(multiplier * repeats))


def survival_probabilities(num_blocks, survival_prob):
    """Stochastic-depth survival probability per block: 1.0 for the first, falling linearly towards
    survival_prob (which the last block never quite reaches); None everywhere when disabled."""
    if not survival_prob:
        return [None] * num_blocks
    drop_rate = 1.0 - survival_prob
    return [1.0 - drop_rate * float(index) / num_blocks for index in range(num_blocks)]


def conv_kernel_initializer(shape, dtype=None, partition_info=None):
    """Normal(0, sqrt(2 / fan_out)), fan_out = kh * kw * shape[3], as the official models."""
    del partition_info
    kernel_height, kernel_width, _, out_filters = shape
    fan_out = int(kernel_height * kernel_width * out_filters)
    return tf.random_normal(shape, mean=0.0, stddev=math.sqrt(2.0 / fan_out), dtype=dtype or tf.float32)


def dense_kernel_initializer(shape, dtype=None, partition_info=None):
    """Uniform(+-1/sqrt(num_classes)), as the official models."""
    del partition_info
    init_range = 1.0 / math.sqrt(shape[1])
    return tf.random_uniform(shape, -init_range, init_range, dtype=dtype or tf.float32)


def default_dropout(inputs, rate, training):
    if not training or not rate:
        return inputs
    return tf.nn.dropout(inputs, rate=rate)


def drop_connect(inputs, training, survival_prob):
    """Drops the whole residual branch of a sample with probability 1 - survival_prob."""
    if not training or survival_prob is None or survival_prob >= 1.0:
        return inputs
    batch_size = tf.shape(inputs)[0]
    keep = tf.floor(survival_prob + tf.random_uniform([batch_size, 1, 1, 1], dtype=inputs.dtype))
    return inputs / survival_prob * keep


class DepthwiseConv2D(tf.keras.layers.DepthwiseConv2D, tf.layers.Layer):
    """Keras depthwise conv with `tf.layers` scoping, so its kernel is `depthwise_conv2d/depthwise_kernel`."""


class BatchNormalization(tf.layers.Layer):
    """Batch norm named as the official `tpu_batch_normalization`, running the fused kernel.

    Statistics follow the official (non-fused) layer exactly: the moving variance is fed the
    biased batch variance, so the fused kernel's Bessel-corrected output is scaled back.
    """

    _FUSED_MIN_EPSILON = 1.001e-5

    def __init__(self, momentum, epsilon, name="tpu_batch_normalization", **kwargs):
        super(BatchNormalization, self).__init__(name=name, **kwargs)
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight("gamma", [channels], initializer=tf.ones_initializer())
        self.beta = self.add_weight("beta", [channels], initializer=tf.zeros_initializer())
        self.moving_mean = self.add_weight("moving_mean", [channels], initializer=tf.zeros_initializer(),
                                           trainable=False)
        self.moving_variance = self.add_weight("moving_variance", [channels], initializer=tf.ones_initializer(),
                                               trainable=False)
        super(BatchNormalization, self).build(input_shape)

    def call(self, inputs, training=False):
        fused = self.epsilon >= self._FUSED_MIN_EPSILON
        if not training:
            if fused:
                outputs, _, _ = tf.nn.fused_batch_norm(
                    inputs, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                    epsilon=self.epsilon, is_training=False)
                return outputs
            return tf.nn.batch_normalization(inputs, self.moving_mean, self.moving_variance,
                                             self.beta, self.gamma, self.epsilon)
        if fused:
            outputs, mean, variance = tf.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
            count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
            variance *= (count - 1.0) / count
        else:
            mean, variance = tf.nn.moments(inputs, [0, 1, 2])
            outputs = tf.nn.batch_normalization(inputs, mean, variance, self.beta, self.gamma, self.epsilon)
        decay = 1.0 - self.momentum
        for moving, batch_value in ((self.moving_mean, mean), (self.moving_variance, variance)):
            update = tf.assign_sub(moving, (moving - batch_value) * decay)
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update)
        return outputs


def _batch_norm(global_params):
    return BatchNormalization(momentum=global_params.batch_norm_momentum,
                              epsilon=global_params.batch_norm_epsilon)


def _conv(filters, kernel_size=1, strides=1, use_bias=False):
    return tf.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias,
                            kernel_initializer=conv_kernel_initializer)


class SqueezeExcitation(tf.keras.layers.Layer):
    """Channel attention: squeeze to `num_reduced` channels (counted on the block input), re-expand, gate."""

    def __init__(self, num_reduced, num_expanded, activation, **kwargs):
        super(SqueezeExcitation, self).__init__(**kwargs)
        self._activation = activation
        self._reduce = _conv(num_reduced, use_bias=True)
        self._expand = _conv(num_expanded, use_bias=True)

    def call(self, inputs):
        squeezed = tf_compat.spatial_mean(inputs, keepdims=True)
        squeezed = self._expand(self._activation(self._reduce(squeezed)))
        return tf_compat.sigmoid(squeezed) * inputs


class MBConvBlock(tf.keras.layers.Layer):
    """Mobile inverted bottleneck: [expand 1x1] -> depthwise -> [SE] -> project 1x1 [+ skip]."""

    def __init__(self, block_args, global_params, survival_prob, **kwargs):
        super(MBConvBlock, self).__init__(**kwargs)
        unsupported = [name for name in ("conv_type", "fused_conv", "space2depth", "condconv")
                       if getattr(block_args, name)]
        if unsupported:
            raise ValueError("block options %s (EdgeTPU/CondConv variants) are not supported" % unsupported)
        self.block_args = block_args
        self.survival_prob = survival_prob
        self._clip_output = global_params.clip_projection_output
        if block_args.activation is not None:
            self._activation = _ACTIVATIONS[block_args.activation]
        else:
            self._activation = global_params.relu_fn or tf_compat.swish
        expanded = block_args.input_filters * block_args.expand_ratio
        if block_args.expand_ratio != 1:
            self._expand_conv = _conv(expanded)
            self._expand_bn = _batch_norm(global_params)
        self._depthwise_conv = DepthwiseConv2D(
            block_args.kernel_size, strides=block_args.strides, padding="same", use_bias=False,
            depthwise_initializer=conv_kernel_initializer)
        self._depthwise_bn = _batch_norm(global_params)
        self._se = None
        if global_params.use_se and block_args.se_ratio is not None and 0 < block_args.se_ratio <= 1:
            num_reduced = max(1, int(block_args.input_filters * block_args.se_ratio))
            self._se = SqueezeExcitation(num_reduced, expanded, self._activation)
        self._project_conv = _conv(block_args.output_filters)
        self._project_bn = _batch_norm(global_params)
        self.endpoints = {}

    def call(self, inputs, training=False):
        x = inputs
        if self.block_args.expand_ratio != 1:
            x = self._activation(self._expand_bn(self._expand_conv(x), training=training))
        x = self._activation(self._depthwise_bn(self._depthwise_conv(x), training=training))
        if self._se is not None:
            with tf.variable_scope("se"):
                x = self._se(x)
        self.endpoints = {"expansion_output": x}
        x = self._project_bn(self._project_conv(x), training=training)
        if self._clip_output:
            x = tf.clip_by_value(x, -6, 6)
        x = tf.identity(x)
        if (self.block_args.id_skip and all(s == 1 for s in self.block_args.strides)
                and inputs.shape[-1] == x.shape[-1]):
            x = drop_connect(x, training, self.survival_prob) + inputs
        return x


class Model(tf.keras.Model):
    """Stem, MBConv blocks, head; `endpoints` holds the intermediate tensors after a call."""

    def __init__(self, blocks_args, global_params, name="model"):
        """`blocks_args` are per stage, already width/depth scaled (see efficientnet_builder.scaled_blocks)."""
        super(Model, self).__init__(name=name)
        self._global_params = global_params
        self._activation = global_params.relu_fn or tf_compat.swish
        self._dropout = global_params.dropout_fn or default_dropout
        fixed = bool(global_params.fix_head_stem)
        self._stem_conv = _conv(round_filters(32, global_params, skip=fixed), kernel_size=3, strides=2)
        self._stem_bn = _batch_norm(global_params)
        per_block_args = []
        for stage in blocks_args:
            per_block_args.append(stage)
            per_block_args.extend([stage._replace(input_filters=stage.output_filters, strides=[1, 1])]
                                  * (stage.num_repeat - 1))
        survival = survival_probabilities(len(per_block_args), global_params.survival_prob)
        self._blocks = [MBConvBlock(args, global_params, survival[index])
                        for index, args in enumerate(per_block_args)]
        self._head_conv = _conv(round_filters(1280, global_params, skip=fixed))
        self._head_bn = _batch_norm(global_params)
        self._fc = tf.layers.Dense(global_params.num_classes, kernel_initializer=dense_kernel_initializer)
        self.endpoints = {}

    def call(self, inputs, training=False, features_only=False, pooled_features_only=False):
        endpoints = {}
        with tf.variable_scope("stem"):
            x = self._activation(self._stem_bn(self._stem_conv(inputs), training=training))
        endpoints["stem"] = x
        reductions = 0
        for index, block in enumerate(self._blocks):
            with tf.variable_scope("blocks_%d" % index):
                x = block(x, training=training)
            endpoints["block_%d" % index] = x
            endpoints["block_%d/expansion_output" % index] = block.endpoints["expansion_output"]
            is_last = index == len(self._blocks) - 1
            if is_last or self._blocks[index + 1].block_args.strides[0] > 1:
                reductions += 1
                endpoints["reduction_%d" % reductions] = x
                endpoints["reduction_%d/expansion_output" % reductions] = block.endpoints["expansion_output"]
        endpoints["features"] = x
        self.endpoints = endpoints
        if features_only:
            return x
        with tf.variable_scope("head"):
            x = self._activation(self._head_bn(self._head_conv(x), training=training))
            endpoints["head_1x1"] = x
            if self._global_params.local_pooling and x.shape[1:3].is_fully_defined():
                x = tf.nn.avg_pool(x, ksize=[1, x.shape[1], x.shape[2], 1], strides=[1, 1, 1, 1], padding="VALID")
                endpoints["pooled_features"] = x
                x = tf.squeeze(x, [1, 2])
            else:
                x = tf_compat.spatial_mean(x)
                endpoints["pooled_features"] = x
            if pooled_features_only:
                return endpoints["pooled_features"]
            x = self._dropout(x, self._global_params.dropout_rate, training)
            endpoints["global_pool"] = x
            x = self._fc(x)
        endpoints["head"] = x
        return x
