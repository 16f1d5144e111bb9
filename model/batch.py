"""A padded audio-visual batch (see docs/CONTRACTS.md, "model/")."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Batch:
    audio: Tensor  # (B, Ta, Da) float, zero-padded
    audio_mask: Tensor  # (B, Ta) bool, True = real frame
    video: Tensor  # (B, Tv, Dv) float
    video_mask: Tensor  # (B, Tv) bool
    has_audio: Tensor  # (B,) bool
    has_video: Tensor  # (B,) bool
    target: Tensor  # (B, K) class distribution, or (B, 3) arousal/valence/dominance
    label: Tensor  # (B,) long class index, -1 for dimensional

    def __post_init__(self) -> None:
        _check(self)

    @property
    def size(self) -> int:
        return self.has_audio.shape[0]

    @property
    def paired(self) -> Tensor:  # (B,) bool
        return self.has_audio & self.has_video

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                 for f in dataclasses.fields(self)}
        return Batch(**moved)

    def select(self, idx: Tensor | Sequence[int]) -> Batch:
        """Subset of samples (idx: (N,) long indices or (B,) bool mask)."""
        idx = torch.as_tensor(idx, device=self.has_audio.device)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().squeeze(1)
        picked = {f.name: getattr(self, f.name).index_select(0, idx) for f in dataclasses.fields(self)}
        return Batch(**picked)

    def drop(self, audio: Tensor | None = None, video: Tensor | None = None) -> Batch:
        """Copy with the modality removed for samples where the (B,) bool mask is True."""
        has_audio, audio_x, audio_mask = _remove(self.has_audio, self.audio, self.audio_mask, audio)
        has_video, video_x, video_mask = _remove(self.has_video, self.video, self.video_mask, video)
        return dataclasses.replace(self, audio=audio_x, audio_mask=audio_mask, has_audio=has_audio,
                                   video=video_x, video_mask=video_mask, has_video=has_video)

    @classmethod
    def from_arrays(cls, audio_list: Sequence[Tensor | None], video_list: Sequence[Tensor | None],
                    has_audio: Sequence[bool] | Tensor | None, has_video: Sequence[bool] | Tensor | None,
                    target: Tensor, label: Tensor | Sequence[int] | None = None,
                    audio_dim: int | None = None, video_dim: int | None = None) -> Batch:
        """Pad per-sample (T, D) feature arrays (None when missing) into a Batch.

        has_audio/has_video default to "array is not None"; label defaults to -1.
        audio_dim/video_dim are needed only when a modality is missing in every sample.
        """
        audio, audio_mask = pad_sequences(audio_list, audio_dim, "audio")
        video, video_mask = pad_sequences(video_list, video_dim, "video")
        has_audio = _presence(has_audio, audio_list)
        has_video = _presence(has_video, video_list)
        target = torch.as_tensor(target, dtype=torch.float32)
        if label is None:
            label = torch.full((len(audio_list),), -1, dtype=torch.long)
        label = torch.as_tensor(label, dtype=torch.long)
        return cls(audio, audio_mask, video, video_mask, has_audio, has_video, target, label)


def pad_sequences(arrays: Sequence[Tensor | None], dim: int | None, name: str) -> tuple[Tensor, Tensor]:
    """List of (T_i, D) arrays or None -> (B, T, D) float32 zero-padded, (B, T) bool mask.

    T is at least 1 so that a batch where the modality is missing everywhere still has a shape.
    """
    tensors = [None if a is None else torch.as_tensor(a, dtype=torch.float32) for a in arrays]
    present = [t for t in tensors if t is not None]
    dims = {t.shape[1] for t in present if t.dim() == 2}
    if any(t.dim() != 2 for t in present) or len(dims) > 1:
        raise ValueError(f"{name}: every array must be (T, D) with one D, got "
                         f"{sorted({tuple(t.shape) for t in present})}")
    d = dims.pop() if dims else dim
    if d is None:
        raise ValueError(f"{name}: missing in every sample, pass {name}_dim")
    t_max = max([t.shape[0] for t in present] + [1])
    out = torch.zeros(len(tensors), t_max, d)
    mask = torch.zeros(len(tensors), t_max, dtype=torch.bool)
    for i, t in enumerate(tensors):
        if t is not None:
            out[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = True
    return out, mask


def _presence(flags, arrays: Sequence[Tensor | None]) -> Tensor:
    if flags is None:
        return torch.tensor([a is not None for a in arrays], dtype=torch.bool)
    return torch.as_tensor(flags, dtype=torch.bool)


def _remove(has: Tensor, x: Tensor, mask: Tensor, remove: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    if remove is None:
        return has, x, mask
    remove = torch.as_tensor(remove, dtype=torch.bool, device=has.device)
    keep = ~remove
    return has & keep, x * keep[:, None, None].to(x.dtype), mask & keep[:, None]


def _check(b: Batch) -> None:
    n = b.has_audio.shape[0]
    shapes = {"audio": (b.audio.dim(), b.audio.shape[0]), "video": (b.video.dim(), b.video.shape[0])}
    for name, (ndim, rows) in shapes.items():
        if ndim != 3 or rows != n:
            raise ValueError(f"Batch.{name} must be (B={n}, T, D), got {tuple(getattr(b, name).shape)}")
    for name, x, m in (("audio", b.audio, b.audio_mask), ("video", b.video, b.video_mask)):
        if m.dtype != torch.bool or tuple(m.shape) != tuple(x.shape[:2]):
            raise ValueError(f"Batch.{name}_mask must be bool {tuple(x.shape[:2])}, got "
                             f"{m.dtype} {tuple(m.shape)}")
    for name in ("has_audio", "has_video", "label"):
        if tuple(getattr(b, name).shape) != (n,):
            raise ValueError(f"Batch.{name} must be ({n},), got {tuple(getattr(b, name).shape)}")
    for name, has, m in (("audio", b.has_audio, b.audio_mask), ("video", b.has_video, b.video_mask)):
        if not bool((m.any(1) == has).all()):
            raise ValueError(f"Batch.{name}_mask must have a real frame exactly where has_{name} is True")
    if b.target.dim() != 2 or b.target.shape[0] != n:
        raise ValueError(f"Batch.target must be (B={n}, K), got {tuple(b.target.shape)}")
    if n and not bool((b.has_audio | b.has_video).all()):
        raise ValueError("every sample needs at least one modality (has_audio | has_video)")
