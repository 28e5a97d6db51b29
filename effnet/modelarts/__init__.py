"""Huawei Cloud ModelArts training jobs: the job configuration file, OBS transfers and the run itself
(modelarts_entry_acc.py / modelarts_entry_perf.py at the top level are thin wrappers)."""
