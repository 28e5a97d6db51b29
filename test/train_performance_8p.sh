#!/usr/bin/env bash
# ModelZoo test script, 8 Ascend devices (RANK_SIZE, default 8, of the rank table RANK_TABLE_FILE): a
# short training run that measures images/sec over all devices (no evaluation), prints the "Final
# result" block and writes test/output/<rank 0's device>/${CaseName}.log (CaseName ..._8p_perf).
#
#   RANK_TABLE_FILE=$PWD/rank_table_8p.json bash test/train_performance_8p.sh --data_path=/data/imagenet_tfrecords
#
# Options: bash test/train_performance_8p.sh --help. Implementation: scripts/modelzoo_test.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../scripts/modelzoo_test.sh" perf 8p "$@"
