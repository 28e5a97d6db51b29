"""The library behind the ModelZoo entry points (train.py, test.py, the tools at the top level).

Folders by responsibility:
  checkpoints/  reading (find, check, restore) and writing (lock, checked saver, retention) checkpoints,
                and the run record kept beside them
  data/         augmentation policies used by the input pipeline (preprocess.py stays at the top level)
  devices/      NPU / GPU / CPU specifics: session config, loss scaling, collectives
  evaluation/   the evaluator shared by test.py and the validation during training
  training/     training policy as pure functions (learning rate, batch-norm momentum, validation cadence)
  weights/      reading foreign weight files (Keras, PyTorch, safetensors) as plain data
The TensorFlow 1.15 / 2.x differences live in tf_compat.py, the flags train.py and test.py share in
common_flags.py.
"""
