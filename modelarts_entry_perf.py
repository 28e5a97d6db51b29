"""ModelArts training job, performance run (test/train_performance_1p.sh):

  python modelarts_entry_perf.py --data_url=obs://bucket/data --train_url=obs://bucket/output/ [test-script options]

Parameters in configs/modelarts.yaml; the logic is in effnet/modelarts/entry.py.
"""
import sys

from effnet.modelarts import entry

if __name__ == "__main__":
    entry.main("perf", sys.argv)
