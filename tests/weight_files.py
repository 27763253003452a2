"""Write backbone weight files the way they are distributed, for offline tests of the loading paths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def vit_to_jax_npz(model: torch.nn.Module, path: Path) -> None:
    """Save a timm ViT in the AugReg JAX ``.npz`` layout (the inverse of timm's npz loader)."""
    def t(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()

    w: dict[str, np.ndarray] = {
        "embedding/kernel": t(model.patch_embed.proj.weight).transpose(2, 3, 1, 0),
        "embedding/bias": t(model.patch_embed.proj.bias),
        "cls": t(model.cls_token),
        "Transformer/posembed_input/pos_embedding": t(model.pos_embed),
        "Transformer/encoder_norm/scale": t(model.norm.weight),
        "Transformer/encoder_norm/bias": t(model.norm.bias),
        "head/kernel": t(model.head.weight).T,
        "head/bias": t(model.head.bias),
    }
    dim = model.embed_dim
    for i, block in enumerate(model.blocks):
        heads = block.attn.num_heads
        p = f"Transformer/encoderblock_{i}/"
        mha = p + "MultiHeadDotProductAttention_1/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = t(block.norm1.weight), t(block.norm1.bias)
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = t(block.norm2.weight), t(block.norm2.bias)
        qkv_w = t(block.attn.qkv.weight).reshape(3, dim, dim)
        qkv_b = t(block.attn.qkv.bias).reshape(3, heads, dim // heads)
        for j, name in enumerate(("query", "key", "value")):
            w[mha + f"{name}/kernel"] = qkv_w[j].T.reshape(dim, heads, dim // heads)
            w[mha + f"{name}/bias"] = qkv_b[j]
        w[mha + "out/kernel"] = t(block.attn.proj.weight).reshape(dim, heads, dim // heads).transpose(1, 2, 0)
        w[mha + "out/bias"] = t(block.attn.proj.bias)
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"] = t(fc.weight).T
            w[p + f"MlpBlock_3/Dense_{r}/bias"] = t(fc.bias)
    np.savez(path, **w)


def save_state_dict(model: torch.nn.Module, path: Path) -> None:
    """``.safetensors`` / ``.pth`` / ``.bin`` by suffix; ``.pth`` nests under ``state_dict`` like many releases."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix == ".pth":
        torch.save({"state_dict": state, "epoch": 1}, path)
    else:
        torch.save(state, path)
