"""Model configuration: one flat, frozen dataclass so a search space can set any field by name.

Defaults are the sizes of the official VAVL code (ilucasgoncalves/VAVL, net/avmodel.py):
1x1 conv projection to 50 dims, conformer encoders of width 512 (3 layers per modality),
2 shared conformer layers, heads 512 -> 512 -> 256 -> K.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.registry import FUSIONS

TASKS = ("categorical", "dimensional")


@dataclass(frozen=True)
class ModelConfig:
    # inputs
    audio_dim: int = 1024  # wav2vec2-large-robust, 50 Hz
    video_dim: int = 1408  # EfficientNet-B2 face features, ~30 fps
    # encoders (conformer)
    proj_dim: int = 50  # 1x1 conv projection of the input features
    d_model: int = 512
    n_heads: int = 8
    enc_layers: int = 3  # per-modality conformer blocks
    shared_layers: int = 2  # conformer blocks shared by both modalities
    kernel_size: int = 31  # depthwise conv kernel
    ff_mult: int = 4
    dropout: float = 0.2
    # VAVL ablation switches
    use_shared: bool = True
    shared_residual: bool = True
    recon_weight: float = 1.0  # 0 removes the reconstruction heads
    unimodal_weight: float = 1.0  # weight of the audio/video head losses
    head_hidden: int = 256  # MLP head: d_in -> d_model -> head_hidden -> K
    # task
    task: str = "categorical"  # or "dimensional" (arousal, valence, dominance)
    n_outputs: int = 6
    # fusion strategy and its own parameters (prefixed by the strategy name)
    fusion: str = "vavl"
    gated_hidden: int = 128
    xattn_layers: int = 2
    foal_use_align: bool = True
    foal_use_match: bool = True
    foal_align_weight: float = 1.0
    foal_match_weight: float = 0.1
    foal_temperature: float = 0.07
    foal_proj_dim: int = 256
    foal_layers: int = 2  # cross-attention layers per direction

    def __post_init__(self) -> None:
        errors = _validate(self)
        if errors:
            raise ValueError("invalid ModelConfig: " + "; ".join(errors))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _validate(cfg: ModelConfig) -> list[str]:
    errors = []
    if cfg.task not in TASKS:
        errors.append(f"task={cfg.task!r} not in {TASKS}")
    if cfg.fusion not in FUSIONS:
        errors.append(f"fusion={cfg.fusion!r} not in {sorted(FUSIONS)}")
    if cfg.task == "dimensional" and cfg.n_outputs != 3:
        errors.append(f"dimensional task needs n_outputs=3, got {cfg.n_outputs}")
    if cfg.task == "categorical" and cfg.n_outputs < 2:
        errors.append(f"categorical task needs n_outputs >= 2, got {cfg.n_outputs}")
    if cfg.d_model % cfg.n_heads:
        errors.append(f"d_model={cfg.d_model} not divisible by n_heads={cfg.n_heads}")
    if cfg.kernel_size % 2 == 0:
        errors.append(f"kernel_size={cfg.kernel_size} must be odd")
    if not 0.0 <= cfg.dropout < 1.0:
        errors.append(f"dropout={cfg.dropout} not in [0, 1)")
    if cfg.recon_weight < 0 or cfg.unimodal_weight < 0:
        errors.append("recon_weight and unimodal_weight must be >= 0")
    if cfg.foal_temperature <= 0:
        errors.append(f"foal_temperature={cfg.foal_temperature} must be > 0")
    positive = ("audio_dim", "video_dim", "proj_dim", "d_model", "n_heads", "enc_layers",
                "ff_mult", "head_hidden", "gated_hidden", "xattn_layers", "foal_proj_dim",
                "foal_layers")
    errors += [f"{name} must be >= 1" for name in positive if getattr(cfg, name) < 1]
    if cfg.shared_layers < 0:
        errors.append("shared_layers must be >= 0")
    return errors


PRESETS: dict[str, dict] = {
    "paper": {},
    "tiny": dict(audio_dim=32, video_dim=24, proj_dim=16, d_model=32, n_heads=2, enc_layers=1,
                 shared_layers=1, kernel_size=7, ff_mult=2, dropout=0.1, head_hidden=16,
                 gated_hidden=16, xattn_layers=1, foal_proj_dim=16, foal_layers=1),
}


def model_config(preset: str = "paper", **overrides) -> ModelConfig:
    """ModelConfig from a preset ("paper" | "tiny") plus field overrides.

    A dimensional task without an explicit n_outputs gets n_outputs=3.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown ModelConfig fields: {unknown}")
    values = {**PRESETS[preset], **overrides}
    if values.get("task") == "dimensional" and "n_outputs" not in overrides:
        values["n_outputs"] = 3
    return ModelConfig(**values)
