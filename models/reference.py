"""Reusing a reference's side: everything computed from the reference crops alone (their offsets and the head's
projection of their features) computed once and served to any number of distorted crops
(:meth:`models.ahiq.AHIQ.encode_reference` makes it, :meth:`~models.ahiq.AHIQ.score_distorted` uses it).
``forward(dist, ref)`` computes the same terms in one pass; scoring a dataset this way costs about one pass per
distorted image. A leaf: it imports nothing of the project."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class ReferenceSide:
    """What the distorted side needs from the reference crops; row ``i`` of each tensor is reference crop ``i``.

    ``offset (N, 18, H, W)`` steers the deformable conv (None for the other fusions); ``terms (N, channels, h, w)``
    is the head's projection of the reference features. A new field is carried by ``select``/``cat``/``nbytes``
    as long as it is a tensor with one row per crop, or None.
    """

    offset: torch.Tensor | None
    terms: torch.Tensor

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __len__(self) -> int:
        return len(self.terms)

    def select(self, index: torch.Tensor | slice) -> "ReferenceSide":
        """The rows ``index`` (a slice is a view; ``.clone()`` it to keep it alone)."""
        return replace(self, **{k: t[index] for k, t in self._tensors().items()})

    def clone(self) -> "ReferenceSide":
        return replace(self, **{k: t.clone() for k, t in self._tensors().items()})

    @staticmethod
    def cat(sides: list["ReferenceSide"]) -> "ReferenceSide":
        return sides[0] if len(sides) == 1 else replace(
            sides[0], **{k: torch.cat([getattr(s, k) for s in sides]) for k in sides[0]._tensors()})

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors().values())
