"""Content-addressed storage of trained modules and sampled images.

A key is the SHA-256 of everything that determines the object: for a module, the bytes of its
training images, the generator settings and its seed; for samples, the module's key, the
sampler settings and the seeds. Identical work is therefore done once, whichever run asks
(downstream variants, classifier seeds, unlearning). Files are written atomically
(datasets/files.py).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ...datasets.files import atomic_write


def content_key(parts: dict, tensor: torch.Tensor | None = None) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=list).encode())
    if tensor is not None:
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


class ContentCache:
    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None

    def _path(self, kind: str, key: str) -> Path:
        return self.root / "federatedfactory" / kind / f"{key}.pt"

    def checkpoint_path(self, kind: str, key: str) -> Path | None:
        """Where the work that makes an entry checkpoints (methods/checkpoints.py)."""
        return None if self.root is None else self._path(kind, key).with_suffix(".ckpt")

    def has(self, kind: str, key: str) -> bool:
        return self.root is not None and self._path(kind, key).exists()

    def get(self, kind: str, key: str):
        if self.root is None:
            return None
        path = self._path(kind, key)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable: recompute and overwrite
            return None

    def put(self, kind: str, key: str, obj) -> None:
        if self.root is None:
            return
        atomic_write(self._path(kind, key), lambda f: torch.save(obj, f))
