"""Model configuration: one flat, frozen dataclass so a search space can set any field by name.

Defaults are the sizes of the official VAVL code (ilucasgoncalves/VAVL, net/avmodel.py):
1x1 conv projection to 50 dims, conformer encoders of width 512 (3 layers per modality),
2 shared conformer layers, heads 512 -> 512 -> 256 -> K; dropout 0.1 in the conformers
(conformer/model.py defaults) and 0.2 in the heads (train.py --out_dropout).
Foal-Net switches (foal_*) default to the paper's intent; docs/fidelity.md lists each one next to
the official code (ASolitaryMan/Foal-Net model.py) and the value that reproduces it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.registry import FUSIONS

TASKS = ("categorical", "dimensional")
FOAL_CHOICES = {
    "foal_temperature_form": ("paper", "official"),  # logits = cos * exp(s) | cos / t (t init log(1/tau))
    "foal_positives": ("mean", "sum"),  # multi-positive targets averaged | summed (official)
    "foal_negatives": ("argmax", "sample"),  # hardest negative | sampled ~ softmax(sim) (official)
    "foal_match_heads": ("joint", "directional"),  # one BCE head | a2v + v2a 2-way heads (official)
    "foal_xattn": ("pre_ln", "post_ln"),  # pre-LN block with feed-forward | post-LN, no FF (official)
    "foal_align_input": ("encoded", "features"),  # pool the encoded frames | the input features
    "foal_cls_head": ("mlp", "linear"),  # VAVL's MLP head | one Linear on dropout(concat) (official)
}
CONFORMER_INITS = ("default", "xavier")  # PyTorch's | the official conformer's Linear wrapper


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
    dropout: float = 0.1  # conformer dropout (official conformer/model.py: 0.1)
    head_dropout: float = 0.2  # MLP heads (official train.py --out_dropout 0.2)
    # VAVL ablation switches
    use_shared: bool = True
    shared_residual: bool = True
    recon_weight: float = 1.0  # x the official weight (2 categorical, 1 dimensional); 0 removes the heads
    unimodal_weight: float = 1.0  # weight of the audio/video head losses
    head_hidden: int = 256  # MLP head: d_in -> d_model -> head_hidden -> K
    head_bottleneck_relu: bool = False  # ReLU between head_hidden and K (official MLP: none)
    # official-architecture switches (docs/fidelity.md V20-V22; on in the vavl_official_* presets)
    shared_input_proj: bool = False  # Linear(d, d) + dropout before the shared conformer, skipped by its residual
    conformer_init: str = "default"  # "xavier": Xavier-uniform weights, zero biases on conformer linears
    depthwise_bias: bool = True  # the official DepthwiseConv1d has no bias
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
    foal_heads: int = 4  # attention heads of its cross-attention (official: 4)
    foal_proj_dropout: float = 0.5  # dropout inside its projection blocks (official Projection: 0.5)
    foal_temperature_form: str = "paper"
    foal_positives: str = "sum"
    foal_negatives: str = "sample"
    foal_match_heads: str = "directional"
    foal_xattn: str = "post_ln"
    foal_align_input: str = "encoded"  # alignment pools the encoded frames | the input features
    foal_audio_width: int = 0  # cross-attention width of the audio-query stream (0 = d_model; official 1024)
    foal_video_width: int = 0  # ... of the video-query stream (0 = d_model; official 768)
    foal_cls_head: str = "mlp"  # classifier on the fused vector: VAVL's MLP | one Linear (official)

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
    for name in ("dropout", "head_dropout", "foal_proj_dropout"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            errors.append(f"{name}={getattr(cfg, name)} not in [0, 1)")
    for name, allowed in FOAL_CHOICES.items():
        if getattr(cfg, name) not in allowed:
            errors.append(f"{name}={getattr(cfg, name)!r} not in {allowed}")
    if cfg.conformer_init not in CONFORMER_INITS:
        errors.append(f"conformer_init={cfg.conformer_init!r} not in {CONFORMER_INITS}")
    for name in ("d_model", "foal_audio_width", "foal_video_width"):
        width = getattr(cfg, name) or cfg.d_model
        if cfg.foal_heads >= 1 and width % cfg.foal_heads:
            errors.append(f"{name}={width} not divisible by foal_heads={cfg.foal_heads}")
        if width < 0:
            errors.append(f"{name} must be >= 0")
    if cfg.recon_weight < 0 or cfg.unimodal_weight < 0:
        errors.append("recon_weight and unimodal_weight must be >= 0")
    if cfg.foal_temperature <= 0:
        errors.append(f"foal_temperature={cfg.foal_temperature} must be > 0")
    positive = ("audio_dim", "video_dim", "proj_dim", "d_model", "n_heads", "enc_layers",
                "ff_mult", "head_hidden", "gated_hidden", "xattn_layers", "foal_proj_dim",
                "foal_layers", "foal_heads")
    errors += [f"{name} must be >= 1" for name in positive if getattr(cfg, name) < 1]
    if cfg.shared_layers < 0:
        errors.append("shared_layers must be >= 0")
    return errors


OFFICIAL_ARCH = dict(shared_input_proj=True, conformer_init="xavier", depthwise_bias=False)
# Foal-Net's official heads and alignment (ASolitaryMan/Foal-Net model.py), VAVL's terms off
FOALNET_OFFICIAL = dict(fusion="foalnet", unimodal_weight=0.0, recon_weight=0.0,
                        foal_temperature_form="official", foal_proj_dim=512, foal_cls_head="linear")

# Names say what they set: "*_sizes" set model sizes only (training then follows the project's
# recipe, TrainConfig defaults); "*_official*" are recipes: sizes, architecture switches and,
# in study/training/config.py TRAINING_PRESETS under the same name, the training.
PRESETS: dict[str, dict] = {
    "vavl_sizes": {},  # the official code's sizes, the project's architecture and training
    "vavl_official_crema_d": dict(OFFICIAL_ARCH),  # + official architecture; training: run_cremad.sh
    "vavl_official_msp_improv": dict(OFFICIAL_ARCH),  # ... training: run_mspimprov.sh (batch 9)
    "foalnet_official": dict(FOALNET_OFFICIAL),  # VAVL encoders, Foal-Net's loss, heads and training
    "tiny": dict(audio_dim=32, video_dim=24, proj_dim=16, d_model=32, n_heads=2, enc_layers=1,
                 shared_layers=1, kernel_size=7, ff_mult=2, dropout=0.1, head_dropout=0.1,
                 head_hidden=16, gated_hidden=16, xattn_layers=1, foal_proj_dim=16, foal_layers=1,
                 foal_heads=2),
}
# Old names, kept so existing specs run: "paper" never set the paper's training (sizes only),
# "official" is the CREMA-D recipe.
PRESET_ALIASES = {"paper": "vavl_sizes", "official": "vavl_official_crema_d"}
PRESETS.update({old: PRESETS[new] for old, new in PRESET_ALIASES.items()})


def canonical_preset(name: str) -> str:
    """The preset's current name (an old alias maps to the preset it stands for)."""
    return PRESET_ALIASES.get(name, name)


def model_config(preset: str = "paper", **overrides) -> ModelConfig:
    """ModelConfig from a preset (a key of PRESETS, e.g. "vavl_sizes" | "tiny") plus field overrides.

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
