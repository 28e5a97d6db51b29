"""Evaluation shared by test.py and the validation during training."""
