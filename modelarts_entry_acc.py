"""ModelArts training job, accuracy run (test/train_full_1p.sh):

  python modelarts_entry_acc.py --data_url=obs://bucket/data --train_url=obs://bucket/output/ [test-script options]

Parameters in configs/modelarts.yaml; the logic is in effnet/modelarts/entry.py.
"""
import sys

from effnet.modelarts import entry

if __name__ == "__main__":
    entry.main("acc", sys.argv)
