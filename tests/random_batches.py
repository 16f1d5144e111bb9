"""Seeded random Batches for tests and benchmarks (not a corpus: see study/synth.py for that).

Class evidence: every frame gets `evidence * code @ W_modality` added to Gaussian noise, where
code is the one-hot label (categorical) or the (arousal, valence, dominance) target
(dimensional) and W_modality is a fixed random matrix (the same for every call), so a model can
learn the mapping across batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model.batch import Batch
from model.config import ModelConfig

_WORLD_SEED = 1234


def _evidence_matrix(n_codes: int, dim: int, offset: int) -> Tensor:
    g = torch.Generator().manual_seed(_WORLD_SEED + offset)
    return torch.randn(n_codes, dim, generator=g) / dim ** 0.5 * 4.0  # (codes, dim)


def random_batch(cfg: ModelConfig, n: int, *, audio_len: tuple[int, int] = (8, 20),
                 video_len: tuple[int, int] = (5, 12), has_audio: Tensor | None = None,
                 has_video: Tensor | None = None, evidence: float = 0.0, seed: int = 0) -> Batch:
    """n samples with lengths drawn uniformly from [lo, hi]; both modalities unless has_* given."""
    g = torch.Generator().manual_seed(seed)
    if cfg.task == "categorical":
        label = torch.randint(0, cfg.n_outputs, (n,), generator=g)
        target = F.one_hot(label, cfg.n_outputs).float()
        code = target
    else:
        label = torch.full((n,), -1, dtype=torch.long)
        target = torch.randn(n, 3, generator=g)
        code = target
    has_audio = torch.ones(n, dtype=torch.bool) if has_audio is None else has_audio
    has_video = torch.ones(n, dtype=torch.bool) if has_video is None else has_video
    audio = _frames(code, has_audio, audio_len, cfg.audio_dim, evidence, g, offset=0)
    video = _frames(code, has_video, video_len, cfg.video_dim, evidence, g, offset=1)
    return Batch.from_arrays(audio, video, has_audio, has_video, target, label,
                             audio_dim=cfg.audio_dim, video_dim=cfg.video_dim)


def _frames(code: Tensor, present: Tensor, length: tuple[int, int], dim: int, evidence: float,
            g: torch.Generator, offset: int) -> list[Tensor | None]:
    w = _evidence_matrix(code.shape[1], dim, offset)  # (codes, dim)
    out: list[Tensor | None] = []
    for i in range(code.shape[0]):
        t = int(torch.randint(length[0], length[1] + 1, (), generator=g))
        x = torch.randn(t, dim, generator=g) + evidence * (code[i] @ w)
        out.append(x if bool(present[i]) else None)
    return out
