"""A reference's side (what is computed from the reference crops alone), computed once by ``AHIQ.encode_reference``
for any number of distorted crops (``AHIQ.score_distorted``)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class ReferenceSide:
    """Per reference crop: ``offset (N, 18, H, W)`` of the deformable conv (None for the other fusions) and ``terms
    (N, channels, h, w)``, the head's projection of its features."""

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
