"""Checkpoints: checkpoint_reader finds, checks and restores; checkpoint_writer saves safely during training."""
