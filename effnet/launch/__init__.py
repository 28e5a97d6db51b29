"""What the shell launchers ask Python: the train.py arguments of a run (recipe, scaling, user flags)."""
