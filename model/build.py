"""Explicit builders (torchtune style): a config in, a model out.

`vavl_paper()` has the official VAVL sizes; `vavl_tiny()` is the laptop/test size. Both take
ModelConfig field overrides (e.g. `vavl_tiny(fusion="gated", audio_dim=40)`).
"""

from __future__ import annotations

from model.config import ModelConfig, model_config
from model.vavl import AVModel


def build_model(cfg: ModelConfig) -> AVModel:
    """VAVL encoders + heads with the fusion strategy named by cfg.fusion."""
    return AVModel(cfg)


def vavl_paper(**overrides) -> AVModel:
    """VAVL at the official code's sizes (51.5 M parameters with the `vavl` fusion)."""
    return AVModel(model_config("paper", **overrides))


def vavl_tiny(**overrides) -> AVModel:
    """VAVL small enough for a 2-core CPU: tests, the demo and smoke benchmarks."""
    return AVModel(model_config("tiny", **overrides))
