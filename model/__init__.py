"""avstudy model package: VAVL encoders, shared block, heads and fusion strategies (torch only)."""

from __future__ import annotations

from model.batch import Batch
from model.build import build_model
from model.config import ModelConfig, model_config
from model.vavl import AVModel, ModelOutput

__all__ = ["AVModel", "Batch", "ModelConfig", "ModelOutput", "build_model", "model_config"]
