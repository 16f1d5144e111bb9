"""Explicit builder: ModelConfig -> AVModel."""

from __future__ import annotations

from model.config import ModelConfig
from model.vavl import AVModel


def build_model(cfg: ModelConfig) -> AVModel:
    """VAVL encoders + heads with the fusion strategy named by cfg.fusion."""
    return AVModel(cfg)
