"""Data-side library code: photo folders into TFRecords, augmentation policies, input-pipeline errors explained."""
