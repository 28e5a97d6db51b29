"""The library behind the ModelZoo entry points (train.py, test.py, the tools at the top level).

Folders by responsibility:
  checkpoints/  reading (find, check, restore) and writing (lock, checked saver, retention) checkpoints,
                and the run record kept beside them
  data/         augmentation policies used by the input pipeline (preprocess.py stays at the top level)
  devices/      the device layer: resolve() and flags (device.py), the NPU (npu.py, the only importer of
                npu_bridge), the GPU (gpu.py), what all share (base.py) and HCCL/Horovod (collectives.py)
  evaluation/   the evaluator shared by test.py and the validation during training
  export/       export.py's formats and checks, and running any exported file (test.py, predict.py, bench)
  launch/       what the shell launchers ask Python: train.py's arguments, the ModelZoo result files
  modelarts/    ModelArts training jobs: job configuration file, OBS copies, the job run
  training/     the training step (train_step.py), the loop, validation during training, resume, the
                progress line, the recipes as data and the training policy as pure functions
  weights/      reading foreign weight files (Keras, PyTorch, safetensors) as plain data
The TensorFlow 1.15 / 2.x differences live in tf_compat.py, the flags train.py and test.py share in
common_flags.py.
"""
