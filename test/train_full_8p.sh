#!/usr/bin/env bash
# ModelZoo test script, 8 Ascend devices (RANK_SIZE, default 8, of the rank table RANK_TABLE_FILE):
# one training process per device, then evaluation on rank 0's device; prints the "Final result"
# block and writes test/output/<rank 0's device>/${CaseName}.log (CaseName ..._8p_acc).
#
#   python3 scripts/make_rank_table.py --output=rank_table_8p.json
#   RANK_TABLE_FILE=$PWD/rank_table_8p.json bash test/train_full_8p.sh --data_path=/data/imagenet_tfrecords
#
# Per-device logs: test/output/<device>/train_<device>.log. Options: bash test/train_full_8p.sh --help.
# Implementation: scripts/modelzoo_test.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../scripts/modelzoo_test.sh" acc 8p "$@"
