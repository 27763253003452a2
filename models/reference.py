"""Reusing a reference's side: everything computed from the reference crops alone (their offsets and the head's
projection of their features) computed once and served to any number of distorted crops. ``forward(dist, ref)``
computes the same terms in one pass; scoring a dataset this way costs about one pass per distorted image."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ahiq.models.ahiq import AHIQ


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


def encode_reference(model: "AHIQ", ref: torch.Tensor) -> ReferenceSide:
    """Reference crops ``(N, 3, H, W)`` -> their :class:`ReferenceSide`."""
    vit, cnn = model.features(ref)
    offset = model.offsets(vit, cnn)
    return ReferenceSide(offset=offset, terms=model.terms(vit, cnn, offset))


def score_distorted(model: "AHIQ", dist: torch.Tensor, side: ReferenceSide, return_maps: bool = False):
    """Scores of distorted crops ``(N, 3, H, W)`` against ``side`` row by row (``side.select(index)`` lines rows up)."""
    grid = (dist.shape[-2] // model.patch_size, dist.shape[-1] // model.patch_size)
    if len(side) != len(dist) or side.terms.shape[-2:] != grid:
        raise ValueError(f"distorted {tuple(dist.shape)} does not match a reference side of {len(side)} crops with "
                         f"{tuple(side.terms.shape[-2:])} patches")
    vit, cnn = model.features(dist)
    score, f, w = model.regressor.compare(model.terms(vit, cnn, side.offset), side.terms)
    return (score, f, w) if return_maps else score
