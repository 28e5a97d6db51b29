#!/usr/bin/env bash
# One-command check of the GPU path on TensorFlow 2.x (A100/H100/H200 and other current NVIDIA GPUs).
#
#   bash bench/gpu_check.sh            # about 10 minutes with a warm pip cache
#
# 1. builds .venv-gpu (Python 3.11/3.10/3.12) with tensorflow[and-cuda] from PyPI (CUDA + cuDNN wheels);
# 2. runs the model tests on the GPU (official-fixture EMA logits, the model table, checkpoints);
# 3. trains the demo (data/demo) for 300 steps on the GPU in float32 and with --gpu_amp --xla, and
#    evaluates each run;
# 4. times bench/train_step.py for B0 at 224, batch 256, float32 and AMP (+XLA), and prints images/s.
# Nothing is written outside the repository except pip's cache; outputs go to ./gpu_check/.
# Set GPU_CHECK_PYTHON to use an existing python that already has tensorflow 2.x with GPU support.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/gpu_check"
TF_VERSION="$(sed -n 's/^tensorflow-cpu==//p' requirements-tf2.txt)"
mkdir -p "$OUT"
failures=()
step() { echo; echo "=== $* ($(date +%H:%M:%S))"; }

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  PYTHON="$GPU_CHECK_PYTHON"
else
  step "environment: .venv-gpu with tensorflow[and-cuda]==$TF_VERSION"
  base=""
  for candidate in python3.11 python3.10 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c \
        'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)'; then
      base="$(command -v "$candidate")"; break
    fi
  done
  [ -n "$base" ] || { echo "error: no Python 3.10-3.12 found: install one (TensorFlow $TF_VERSION needs it)" >&2; exit 1; }
  [ -x .venv-gpu/bin/python ] || "$base" -m venv .venv-gpu || exit 1
  PYTHON="$ROOT/.venv-gpu/bin/python"
  grep -v '^tensorflow-cpu' requirements-tf2.txt > "$OUT/requirements-gpu.txt"
  echo "tensorflow[and-cuda]==$TF_VERSION" >> "$OUT/requirements-gpu.txt"
  "$PYTHON" -m pip install -q --upgrade "pip<24" &&
    "$PYTHON" -m pip install -q -r "$OUT/requirements-gpu.txt" "pytest>=7" ||
    { echo "error: pip install of tensorflow[and-cuda]==$TF_VERSION failed: check access to PyPI" >&2; exit 1; }
fi
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$ROOT"
"$PYTHON" -c 'import tensorflow as tf; gpus = tf.config.list_physical_devices("GPU"); print("tensorflow", tf.__version__, "GPUs:", gpus); assert gpus, "TensorFlow sees no GPU"' ||
  { echo "error: TensorFlow sees no GPU: check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null

step "model tests on the GPU"
# The raw-weight fixture comparison and tests/test_tf_versions.py are CPU figures (TF 1.15's CPU kernels,
# an ill-conditioned input); cuDNN rounds differently, so they are left out here.
if [ -d "$ROOT/../shared/fixtures/official_b0" ]; then
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_model.py -k "not raw_weights and not one_training_step" \
    2>&1 | tail -15 || failures+=("model tests")
else
  echo "skipped: the official fixture ../shared/fixtures/official_b0 is not beside the repository"
  failures+=("model tests (fixture missing)")
fi

for mode in fp32 amp; do
  step "demo training on the GPU, $mode"
  extra=(); [ "$mode" = amp ] && extra=(--gpu_amp --xla)
  rm -rf "$OUT/demo_$mode"
  "$PYTHON" train.py --device=gpu --TMP_DATA_PATH=data/demo --TMP_MODEL_PATH="$OUT/demo_$mode" \
    --TMP_LOG_PATH="$OUT/demo_${mode}_log" --TMP_WEIGHTS_PATH= --image_size=32 --optimizer=adam \
    --learning_rate=3e-3 --lr_schedule=cosine --max_steps=300 --batch_size=64 --min_crop_area=1.0 \
    --norandom_flip --log_every_n_steps=100 "${extra[@]}" 2>&1 | grep -E "step|images/s|error|Accuracy" ||
    failures+=("demo training $mode")
  "$PYTHON" test.py --device=gpu --TMP_DATA_PATH=data/demo --TMP_MODEL_PATH="$OUT/demo_$mode" 2>&1 |
    grep -E "Top|accuracy|error" || failures+=("demo evaluation $mode")
done

for mode in fp32 amp; do
  step "bench/train_step.py B0 224 batch 256, $mode"
  extra=(); [ "$mode" = amp ] && extra=(--gpu_amp --xla)
  "$PYTHON" bench/train_step.py --device=gpu --model_name=efficientnet-b0 --image_size=224 --batch_size=256 \
    --warmup_steps=5 --steps=20 "${extra[@]}" 2>&1 | grep -E "model=|images/s|error" || failures+=("bench $mode")
done

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "gpu_check: FAILED: ${failures[*]}"; exit 1
fi
echo "gpu_check: all steps passed"
