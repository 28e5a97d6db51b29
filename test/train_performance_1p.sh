#!/usr/bin/env bash
# ModelZoo test script, one device: a short training run that measures images/sec (no evaluation),
# prints the "Final result" block and writes $output_path/${CaseName}.log (CaseName ..._1p_perf).
#
#   bash test/train_performance_1p.sh --data_path=/data/imagenet_tfrecords [--train_steps=1000]
#   bash test/train_performance_1p.sh --data_path=data/demo       # 60 steps of the demo recipe
#
# Options: bash test/train_performance_1p.sh --help. Implementation: scripts/modelzoo_test.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../scripts/modelzoo_test.sh" perf 1p "$@"
