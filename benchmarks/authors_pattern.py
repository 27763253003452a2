"""The authors' computation pattern (whole timm backbones with forward hooks, offsets computed twice, torchvision's
deformable convolution, one crop at a time, back-propagation through the backbones), a reference for correctness
tests and speed ratios. It shares the parameters of an :class:`AHIQ` model; to train both side by side, give it a copy."""
from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from ahiq.models.ahiq import AHIQ


class AuthorsPattern(nn.Module):
    """Score crop pairs the way the authors' test loop does, with ``model``'s weights."""

    def __init__(self, model: AHIQ):
        super().__init__()
        cfg = model.config
        # Whole network, all blocks + head; dynamic size so that test crops other than 224 run too.
        self.vit = timm.create_model(cfg.vit, pretrained=False, dynamic_img_size=True, **cfg.vit_kwargs)
        self.resnet = timm.create_model(cfg.cnn, pretrained=False, **cfg.cnn_kwargs)
        # Our truncated backbones keep timm's names; the layers they dropped keep random weights (never read).
        self.vit.load_state_dict(model.vit.model.state_dict(), strict=False)
        renamed = {k.replace("stem.0.", "conv1.").replace("stem.1.", "bn1."): v for k, v in model.cnn.state_dict().items()}
        renamed = {(f"layer{int(k.split('.')[1]) + 1}." + k.split(".", 2)[2]) if k.startswith("stages.") else k: v
                   for k, v in renamed.items()}
        self.resnet.load_state_dict(renamed, strict=False)
        self.vit.eval()
        self.resnet.eval()
        self.blocks, self.patch = cfg.vit_blocks, model.vit.patch_size
        self.deform_net, self.regressor, self.normalise = model.deform_net, model.regressor, model.normalise
        self._outputs: list[torch.Tensor] = []
        blocks = [m for m in self.vit.modules() if isinstance(m, timm.models.vision_transformer.Block)]
        for block in [*blocks, *getattr(self.resnet, f"layer{cfg.cnn_stage}")]:
            block.register_forward_hook(lambda m, i, o: self._outputs.append(o))

    def _vit(self, x: torch.Tensor) -> torch.Tensor:
        self._outputs.clear()
        self.vit(x)
        tokens = torch.cat([self._outputs[b - 1][:, 1:, :] for b in self.blocks], dim=2)
        side = x.shape[-1] // self.patch
        return tokens.transpose(1, 2).unflatten(2, (-1, side))

    def _resnet(self, x: torch.Tensor) -> torch.Tensor:
        self._outputs.clear()
        self.resnet(x)
        return torch.cat(self._outputs, dim=1)

    def _fuse(self, cnn: torch.Tensor, vit_ref: torch.Tensor) -> torch.Tensor:
        net = self.deform_net
        offset = net.conv_offset(F.interpolate(vit_ref, size=cnn.shape[-2:], mode="nearest"))
        fused = torchvision.ops.deform_conv2d(cnn, offset, net.deform.weight, net.deform.bias, padding=(1, 1))
        return net.conv1(fused)

    def _head(self, vit_d, vit_r, cnn_d, cnn_r) -> torch.Tensor:
        head = self.regressor
        d = head.down_channel(torch.cat((vit_d, cnn_d), 1))
        r = head.down_channel(torch.cat((vit_r, cnn_r), 1))
        feat = head.conv1(head.feat_smoothing(torch.cat((d - r, d, r), 1)))
        f, w = head.conv(feat), head.conv_attent(feat)
        return ((f * w).sum(dim=2).sum(dim=2) / w.sum(dim=2).sum(dim=2)).squeeze(1)

    def predict(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Scores of one crop position, ``(B, 3, c, c)`` pairs in [0, 1] -> ``(B,)``, with the autograd graph."""
        dist, ref = self.normalise(dist), self.normalise(ref)
        vit_d, vit_r = self._vit(dist), self._vit(ref)
        cnn_d = self._fuse(self._resnet(dist), vit_r)  # offsets from the reference, computed here ...
        cnn_r = self._fuse(self._resnet(ref), vit_r)  # ... and again here
        return self._head(vit_d, vit_r, cnn_d, cnn_r)

    @torch.no_grad()
    def score_crop(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """One crop position for a batch of pairs, ``(B, 3, c, c)`` in [0, 1] -> ``(B,)``."""
        return self.predict(dist, ref)

    @torch.no_grad()
    def score_image(self, dist: torch.Tensor, ref: torch.Tensor, positions, crop: int) -> torch.Tensor:
        """Mean over crops at ``positions`` of whole images ``(B, 3, H, W)``, one crop at a time."""
        windows = [(..., slice(top, top + crop), slice(left, left + crop)) for top, left in positions]
        return sum(self.score_crop(dist[window], ref[window]) for window in windows) / len(positions)


def authors_optimizer(pattern: AuthorsPattern) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """Their optimiser, plain Adam over two groups (``regressor`` then ``deform_net``, same rate and decay), and their
    schedule, ``CosineAnnealingLR`` stepped after every iteration."""
    optimizer = torch.optim.Adam([{"params": part.parameters(), "lr": 1e-4, "weight_decay": 1e-5}
                                  for part in (pattern.regressor, pattern.deform_net)])
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50, eta_min=0.0)


def authors_train_step(pattern: AuthorsPattern, optimizer: torch.optim.Optimizer, scheduler, dist: torch.Tensor,
                       ref: torch.Tensor, labels: torch.Tensor) -> float:
    """One iteration of their ``train_epoch`` on crop pairs ``(B, 3, c, c)`` and labels ``(B,)``: the loss; backbones
    in eval mode but not frozen (the backward pass runs through them)."""
    for backbone in (pattern.vit, pattern.resnet):
        backbone.eval().requires_grad_(True)
    pred = pattern.predict(dist, ref)
    optimizer.zero_grad()
    loss = F.mse_loss(torch.squeeze(pred), labels)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()
