"""Train a small classifier on three interleaved spirals with crossent.nn.CrossEntropyLoss.

Run: python examples/train_classifier.py [--steps 300]
Each step also evaluates torch.nn.CrossEntropyLoss on the same logits, to show the two agree.
"""

from __future__ import annotations

import argparse
import math

import torch

import crossent


def spirals(n_per_class: int, classes: int = 3, noise: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    radius = torch.linspace(0.05, 1.0, n_per_class).repeat(classes)
    label = torch.arange(classes).repeat_interleave(n_per_class)
    angle = label * (2 * math.pi / classes) + radius * 4.0 + noise * torch.randn(radius.shape)
    points = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    return points, label


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x, y = spirals(300)
    model = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3))
    criterion = crossent.nn.CrossEntropyLoss(label_smoothing=0.05)
    reference = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    largest_gap = 0.0
    for step in range(1, args.steps + 1):
        logits = model(x)
        loss = criterion(logits, y)
        largest_gap = max(largest_gap, abs(loss.item() - reference(logits, y).item()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == 1:
            accuracy = (logits.argmax(1) == y).float().mean().item()
            print(f"step {step:4d}  loss {loss.item():.4f}  accuracy {accuracy:.3f}")
    print(f"largest |crossent - torch| loss difference over training: {largest_gap:.2e}")


if __name__ == "__main__":
    main()
