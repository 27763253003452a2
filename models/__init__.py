"""The network: backbones, deformable fusion, patch-wise head, checkpoints and export."""
