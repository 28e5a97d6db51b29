"""Test double of Huawei's npu_bridge (see tests/npu_double/README.md): plain TensorFlow on CPU."""
from npu_bridge import _recorder

_recorder.install()
_recorder.dump_at_exit_if_asked()
