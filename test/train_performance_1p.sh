#!/usr/bin/env bash
# ModelZoo test script, one device: a short training run that measures images/sec (no evaluation),
# prints the "Final result" block and writes $output_path/${CaseName}.log (CaseName ..._perf).
#
#   bash test/train_performance_1p.sh --data_path=/data/imagenet_tfrecords [--train_steps=1000]
#   bash test/train_performance_1p.sh --data_path=data/demo       # 60 steps of the demo recipe
#
# The options and the implementation are those of train_full_1p.sh (see --help), which switches to
# the performance run because this script's name holds "performance".
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/train_full_1p.sh"
