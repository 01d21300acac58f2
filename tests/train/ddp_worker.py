"""A tiny recommender for trainer tests, and the per-process entry point of the DDP test.

Run under ``torchrun``: ``ddp_worker.py DATASET_DIR OUT_DIR EPOCHS``. Every rank trains the same
tiny model through :class:`Trainer` and writes what it saw to ``OUT_DIR/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class SimulatedCrash(RuntimeError):
    """Raised by :class:`TinyModel` to stand in for a killed process."""


class TinyModel(nn.Module):
    """Item embeddings; the user is the masked mean of the history; BCE of positive vs negatives.

    The dropout makes training consume the torch RNG, so resumption must restore it to be exact.
    ``fail_after`` (a number of forward calls) simulates a crash in the middle of training.
    """

    def __init__(self, n_items: int, dim: int = 8, dropout: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        with torch.no_grad():
            self.items.weight.copy_(torch.randn(n_items + 1, dim, generator=generator) * 0.1)
            self.items.weight[0].zero_()
        self.dropout = nn.Dropout(dropout)
        self.calls = 0
        self.fail_after: int | None = None

    def user(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["mask"].unsqueeze(-1).to(self.items.weight.dtype)
        hist = self.items(batch["hist_items"]) * mask
        return hist.sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise SimulatedCrash(f"simulated crash at forward call {self.calls}")
        user = self.dropout(self.user(batch))
        pos = (user * self.items(batch["target_items"])).sum(-1)
        neg = torch.einsum("bd,bnd->bn", user, self.items(batch["neg_items"]))
        pos_loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
        neg_loss = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
        loss = pos_loss + neg_loss
        return loss, {"pos": pos_loss.detach(), "neg": neg_loss.detach()}

    def score_candidates(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.einsum("bd,bcd->bc", self.user(batch), self.items(batch["cand_items"]))


def main(argv: list[str]) -> int:
    from seminar.data.schema import load_dataset
    from seminar.train import TrainConfig, Trainer

    data_dir, out_dir, epochs = Path(argv[0]), Path(argv[1]), int(argv[2])
    torch.set_num_threads(1)
    ds = load_dataset(data_dir)
    config = TrainConfig(
        epochs=epochs,
        batch_size=64,
        eval_batch_size=16,
        max_length=20,
        out_dir=str(out_dir / "run"),
        progress=False,
        device="cpu",
        early_stopping_patience=None,
        train_negatives=4,
    )
    with Trainer(TinyModel(ds.n_items, seed=1), ds, config) as trainer:
        summary = trainer.fit()
        weights = {k: v.sum().item() for k, v in trainer.model.state_dict().items()}
        report = {
            "rank": trainer.dist.rank,
            "world_size": trainer.dist.world_size,
            "summary": summary,
            "valid": trainer.evaluate("valid"),
            "weights": weights,
        }
    (out_dir / f"rank{report['rank']}.json").write_text(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
