"""Strict comparison of a state dict with a module's own: the one check used for heads and backbones."""
from __future__ import annotations

import torch


def state_dict_problems(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
    """Every way ``given`` does not fit ``own``: missing and unexpected keys, shape mismatches (empty if it fits)."""
    problems = [f"{prefix}{k} missing" for k in own if k not in given]
    problems += [f"{prefix}{k} unexpected" for k in given if k not in own]
    problems += [f"{prefix}{k} has shape {tuple(given[k].shape)}, expected {tuple(v.shape)}"
                 for k, v in own.items() if k in given and tuple(given[k].shape) != tuple(v.shape)]
    return problems


def summarise(problems: list[str], shown: int = 6) -> str:
    """The first ``shown`` problems and how many more, for a one-line message."""
    more = f" and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more
