"""The released AHIQ checkpoint: the clone's ``checkpoints/ahiq_pipal/``, else the user cache (``$AHIQ_HOME``, else
torch hub's), else downloaded into the cache once, its SHA-256 checked against the prefix in its name."""
from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ahiq.models.config import RELEASED_CHECKPOINT, RELEASED_URL
from ahiq.utils.errors import UserError, arg


def offline_variable(names: tuple[str, ...] = ("AHIQ_OFFLINE", "HF_HUB_OFFLINE")) -> str | None:
    """``"NAME is set"`` for the first of the environment variables ``names`` set to a true value (never download)."""
    true = ("1", "true", "yes", "on")
    return next((f"{name} is set" for name in names if os.environ.get(name, "").strip().lower() in true), None)


@lru_cache(maxsize=None)
def unreachable(endpoint: str, timeout: float) -> str | None:
    """Why ``endpoint``'s host (or proxy) takes no TCP connection within ``timeout`` s, or None (in a thread: without a
    network the look-up can block far longer)."""
    url = urllib.parse.urlparse(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or "", proxy_url.port or 80
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        return f"{host}:{port} did not answer within {timeout:.0f}s"
    if outcome[0] is not None:
        return f"{host}:{port} cannot be reached ({type(outcome[0]).__name__})"
    return None


def released_checkpoint(url: str = RELEASED_URL, progress: bool = True,
                        missing_backbones: Callable[[], list[str]] = list) -> Path:
    """The released checkpoint's path: the clone's copy, the cached one, or downloaded into the cache; missing, a
    :class:`UserError` naming ``missing_backbones()`` too."""
    name = url.rsplit("/", 1)[1]
    if RELEASED_CHECKPOINT.name == name and RELEASED_CHECKPOINT.is_file():
        return RELEASED_CHECKPOINT
    import torch.hub

    home = os.environ.get("AHIQ_HOME")
    cached = (Path(home).expanduser() if home else Path(torch.hub.get_dir()) / "checkpoints") / name
    if cached.is_file():
        return cached
    reason = offline_variable()
    if reason is None and urllib.parse.urlparse(url).scheme != "file":
        reason = unreachable(url, 3.0)
    if reason is None:
        prefix = name.rsplit(".", 1)[0].rsplit("-", 1)[1]  # torch.hub's convention: name-<SHA-256 prefix>.pth
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=prefix, progress=progress)
            return cached
        except RuntimeError as err:  # torch.hub's hash check; its temporary file is already gone
            raise UserError(f"{url}: the downloaded file's SHA-256 does not start with {prefix} ({err}); nothing was "
                            f"kept at {cached}; try again, or fetch it by hand and give {arg('checkpoint')}PATH") from None
        except OSError as err:  # urllib's URLError and HTTPError are OSErrors
            reason = f"the download failed ({getattr(err, 'reason', None) or err})"
    parts = [f"the released checkpoint {name} is neither in {RELEASED_CHECKPOINT.parent} nor in the cache {cached.parent}, "
             f"and cannot be downloaded now ({reason}): fetch {url} into {cached.parent} (or `sh download.sh` in a "
             f"clone), or give {arg('checkpoint')}PATH"]
    backbones = missing_backbones()
    if backbones:
        parts.append(f"the pretrained backbones {', '.join(backbones)} are not on this machine either (timm fetches "
                     f"them online; offline: {arg('vit_weights')}FILE and {arg('cnn_weights')}FILE)")
    parts.append(f"to try the pipeline with nothing downloaded: {arg('checkpoint')}none "
                 f"{arg('pretrained_backbones')}false (random weights, scores not meaningful)")
    raise UserError("; ".join(parts))
