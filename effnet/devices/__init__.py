"""Device specifics (NPU, GPU, CPU) behind one resolve()."""
