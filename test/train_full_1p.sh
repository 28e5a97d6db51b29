#!/usr/bin/env bash
# ModelZoo test script, one device: trains EfficientNet, then evaluates it on the validation split,
# prints the "Final result" block and writes $output_path/${CaseName}.log (CaseName ..._1p_acc).
#
#   bash test/train_full_1p.sh --data_path=/data/imagenet_tfrecords [--batch_size=256] [--train_epochs=350]
#   bash test/train_full_1p.sh --data_path=data/demo     # bundled demo data: a few minutes on 2 CPU cores
#
# Options: bash test/train_full_1p.sh --help. Implementation: scripts/modelzoo_test.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../scripts/modelzoo_test.sh" acc 1p "$@"
