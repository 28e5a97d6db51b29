"""Data-side library code: augmentation policies for the input pipeline."""
