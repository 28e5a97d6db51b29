"""efficientnet_pytorch's EfficientNet training step, the PyTorch contender of bench/peers.py.

Run with a Python that has torch and efficientnet_pytorch (the .venv-sources scripts/make_sources_venv.sh
builds). The same work as this package's step: label smoothing 0.1, weight decay 1e-5, Nesterov momentum,
batch-norm updates and an EMA of the weights after every step. With --serve it builds the model once, then
for each `go` line on stdin runs --steps steps and prints their seconds, so that bench/peers.py can
interleave it with the TensorFlow steps.
    python bench/peers/pytorch_step.py --batch_size=16 --image_size=224
"""
import argparse
import copy
import sys
import time

import torch
from efficientnet_pytorch import EfficientNet


def build_step(args):
    torch.manual_seed(0)
    model = EfficientNet.from_name(args.model_name, num_classes=1000, image_size=args.image_size)
    model.train()
    averaged = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-5)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size) * 255.0
    labels = torch.randint(0, 1000, (args.batch_size,))

    def step():
        optimizer.zero_grad()
        loss_fn(model(images), labels).backward()
        optimizer.step()
        with torch.no_grad():
            for shadow, value in zip(averaged.state_dict().values(), model.state_dict().values()):
                if shadow.dtype.is_floating_point:
                    shadow.mul_(0.9999).add_(value, alpha=1e-4)
    return step


def timed(step, steps):
    start = time.time()
    for _ in range(steps):
        step()
    return time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model_name", default="efficientnet-b0")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 leaves torch's choice")
    parser.add_argument("--serve", action="store_true", help="time --steps steps per `go` line on stdin")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    step = build_step(args)
    timed(step, args.warmup_steps)
    print("efficientnet_pytorch step, torch=%s threads=%d" % (torch.__version__, torch.get_num_threads()), flush=True)
    if args.serve:
        for _ in sys.stdin:
            print("%.6f" % timed(step, args.steps), flush=True)
        return
    elapsed = timed(step, args.steps)
    print("train step: %.3f s/step, %.2f images/s" % (elapsed / args.steps, args.batch_size * args.steps / elapsed))


if __name__ == "__main__":
    main()
