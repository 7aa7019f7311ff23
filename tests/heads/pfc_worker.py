"""Partial FC on 2 gloo processes (run by torchrun from test_training.py): each rank holds half
the class centres and half the batch; it saves its loss and gradients to OUT/rank{r}.pt."""

from __future__ import annotations

import sys

import torch


def pfc_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(11, 8, generator=g),
        torch.randn(6, 8, generator=g),
        torch.tensor([0, 3, 5, 6, 10, 5]),
    )


def main(out: str) -> None:
    import torch.distributed as dist

    from resvision.heads.margin import ARCFACE, CombinedMarginLoss, PartialFC

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        weight, emb, labels = pfc_inputs()
        pfc = PartialFC(CombinedMarginLoss(64.0, **ARCFACE), 8, 11)
        pfc.weight.data.copy_(weight[pfc.class_start : pfc.class_start + pfc.num_local])
        mine = emb[rank * 3 : rank * 3 + 3].clone().requires_grad_(True)
        loss = pfc(mine, labels[rank * 3 : rank * 3 + 3])
        loss.backward()
        torch.save(
            {"loss": loss.item(), "weight_grad": pfc.weight.grad, "emb_grad": mine.grad},
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.barrier()  # no rank tears gloo down while the other still talks to it
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
