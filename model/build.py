"""The builder (torchtune style): a config in, a model out (`build_model(model_config("tiny"))`)."""

from __future__ import annotations

from model.config import ModelConfig
from model.vavl import AVModel


def build_model(cfg: ModelConfig) -> AVModel:
    """VAVL encoders + heads with the fusion strategy named by cfg.fusion."""
    return AVModel(cfg)

