"""Training: the step, the loop, validation during training, resume, recipes and the training policy."""
