"""Packing rows of real tokens into a few short sequences (`pack_minibatches`).

A rollout row is [left padding][prompt][response][right padding]; on the update only its
real tokens matter. Packing moves them into `(bins, width)` rows, several rollout rows
per bin, each row's position ids restarting at 0: transformers reads those position ids
and lets a row attend only to itself (a block-diagonal causal mask). A bin holds about
`capacity` tokens (at most 4/3 of it), so attention, whose cost grows with the square of
a bin's length, stays bounded however many rows a micro-batch has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


def balanced_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Rows (indices into `lengths`) per packed sequence.

    As many sequences as first-fit decreasing needs to hold the rows in `capacity` tokens
    each (a longer row gets one of its own); then the rows dealt longest first, each to
    the sequence with the fewest tokens so far. The sequences come out about equally long
    (the longest within 4/3 of the best possible), so little filler pads them to one width.
    """
    order = sorted(range(len(lengths)), key=lambda row: (-lengths[row], row))
    room: list[int] = []  # first-fit decreasing: what is left in each sequence
    for row in order:
        fits = next((b for b, left in enumerate(room) if left >= lengths[row]), None)
        if fits is None:
            room.append(capacity - lengths[row])
        else:
            room[fits] -= lengths[row]
    bins: list[list[int]] = [[] for _ in room]
    load = [0] * len(room)
    for row in order:
        emptiest = min(range(len(bins)), key=lambda b: (load[b], b))
        bins[emptiest].append(row)
        load[emptiest] += lengths[row]
    return bins


@dataclass(frozen=True)
class Packing:
    """Where the real tokens of (B, L) rows go in a packed (bins, width) batch.

    `place` (B, L) holds, for every real token, its index in the flattened packed batch
    (row-major); padding slots hold -1. `real` (B, L) marks the real tokens and `dest`
    (n,) is `place` at them, in row-major order: where `pack` writes.
    """

    bins: int
    width: int
    place: torch.Tensor
    real: torch.Tensor
    dest: torch.Tensor

    @classmethod
    def of(cls, real: torch.Tensor, capacity: int) -> Packing:
        """Pack the rows of the (B, L) boolean mask `real` (contiguous real tokens per row)
        into sequences of about max(`capacity`, longest row) tokens."""
        lengths = real.sum(1).tolist()
        bins = balanced_bins(lengths, max(capacity, max(lengths)))
        width = max(sum(lengths[row] for row in rows) for rows in bins)  # the fullest bin
        start = [0] * len(lengths)  # each row's first index in the flattened packed batch
        for b, rows in enumerate(bins):
            offset = b * width
            for row in rows:
                start[row] = offset
                offset += lengths[row]
        rank = real.long().cumsum(1) - 1  # each real token's index within its row
        place = (torch.tensor(start, device=real.device)[:, None] + rank).masked_fill(~real, -1)
        return cls(len(bins), width, place, real, place[real])

    def pack(self, x: torch.Tensor, fill: int = 0) -> torch.Tensor:
        """(B, L) -> (bins, width): the real entries of `x` in their packed places, `fill`
        after the last row of a bin (a filler position 0 is a sequence of its own)."""
        packed = x.new_full((self.bins * self.width,), fill)
        packed[self.dest] = x[self.real]
        return packed.view(self.bins, self.width)


@contextlib.contextmanager
def head_reads(model: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """While open, `model`'s output head (lm_head) reads only the hidden states at the
    flattened positions `keep` (its logits come out as (1, len(keep), V)).

    The model's own forward still runs whatever follows its head (logit soft-capping or
    scaling), and no logits are computed for positions the loss never reads.
    """

    def gather(module: nn.Module, args: tuple) -> tuple:
        states, *rest = args
        return (states.flatten(0, -2)[keep].unsqueeze(0), *rest)

    handle = model.get_output_embeddings().register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()
