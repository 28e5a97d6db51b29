"""Double of npu_bridge.estimator.npu.util: the session-mode loop sinking entry point."""
import tensorflow.compat.v1 as tf

from npu_bridge import _recorder

_NPU_RUNCONFIG = "npu_runconfig"


def _create_or_get_var(var_name):
    """int64 resource variable in collection npu_runconfig_<name> and LOCAL_VARIABLES, as the adapter makes."""
    graph = tf.get_default_graph()
    collection = "%s_%s" % (_NPU_RUNCONFIG, var_name)
    existing = graph.get_collection(collection)
    if len(existing) > 1:
        raise RuntimeError("Multiple var in collection.")
    if existing:
        return existing[0]
    with tf.variable_scope(_NPU_RUNCONFIG, reuse=tf.AUTO_REUSE):
        return tf.get_variable(var_name, shape=[], dtype=tf.int64, initializer=tf.zeros_initializer(),
                               trainable=False, collections=[collection, tf.GraphKeys.LOCAL_VARIABLES],
                               use_resource=True)


def set_iteration_per_loop(sess, train_op, iterations_per_loop=1):
    """Returns an IterationOp that runs train_op iterations_per_loop times per sess.run."""
    if not isinstance(train_op, tf.Operation):
        raise ValueError("The incoming 'train_op' type is '%s', and the need type is 'Operation'"
                         % type(train_op).__name__)
    if not isinstance(iterations_per_loop, int) or iterations_per_loop <= 0:
        raise ValueError("iterations_per_loop must be positive integer, but got %r" % (iterations_per_loop,))
    _recorder.record("set_iteration_per_loop", iterations_per_loop=iterations_per_loop, train_op=train_op)
    if iterations_per_loop == 1:
        return train_op
    iterations_var = _create_or_get_var("iterations_per_loop")
    loop_cond = _create_or_get_var("loop_cond")
    const_zero = _create_or_get_var("zero")
    const_one = _create_or_get_var("one")
    iterations_var.load(iterations_per_loop - 1, session=sess)
    loop_cond.load(0, session=sess)
    const_zero.load(0, session=sess)
    const_one.load(1, session=sess)
    iteration_op = tf.group(train_op, name="IterationOp")
    tf.add_to_collection(_recorder.LOOP_OPS_COLLECTION, iteration_op)
    return iteration_op
