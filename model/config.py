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
from typing import Any

from model.registry import FUSIONS, strategy, strategy_keys
from study.keys import AT_LEAST_1, NON_NEGATIVE, UNIT_OPEN, flat_problems, key, problems_of

TASKS = ("categorical", "dimensional")


def _fusions() -> tuple[str, ...]:
    return tuple(FUSIONS)  # read when checked: the table may grow at run time (a test adds one)


POOLINGS = ("mean", "mean_std")  # temporal pooling of the encoders' frames (model/pooling.py)
CONFORMER_INITS = ("default", "xavier")  # PyTorch's | the official conformer's Linear wrapper
UNIMODAL_LOSSES = ("share", "mean")  # how a unimodal head's loss counts its samples (model/vavl.py loss)


@dataclass(frozen=True)
class ModelConfig:
    """The model's keys, each declared with its rule (study/keys.py). A fusion strategy's own
    keys are declared with the strategy (model/registry.py `Strategy.keys`) and held in
    `options`; they read as attributes (`cfg.foal_heads`) and flatten into `to_dict()`."""

    # inputs
    audio_dim: int = key(1024, bound=AT_LEAST_1, doc="wav2vec2-large-robust, 50 Hz")
    video_dim: int = key(1408, bound=AT_LEAST_1, doc="EfficientNet-B2 face features, ~30 fps")
    # encoders (conformer)
    proj_dim: int = key(50, bound=AT_LEAST_1, doc="1x1 conv projection of the input features")
    d_model: int = key(512, bound=AT_LEAST_1)
    n_heads: int = key(8, bound=AT_LEAST_1)
    enc_layers: int = key(3, bound=AT_LEAST_1, doc="per-modality conformer blocks")
    shared_layers: int = key(2, bound=NON_NEGATIVE, doc="conformer blocks shared by both modalities")
    kernel_size: int = key(31, bound=AT_LEAST_1, odd=True, doc="depthwise conv kernel")
    ff_mult: int = key(4, bound=AT_LEAST_1)
    dropout: float = key(0.1, bound=UNIT_OPEN, doc="conformer dropout (official conformer/model.py)")
    head_dropout: float = key(0.2, bound=UNIT_OPEN, doc="MLP heads (official train.py --out_dropout)")
    # VAVL ablation switches
    use_shared: bool = key(True)
    shared_residual: bool = key(True)
    recon_weight: float = key(1.0, bound=NON_NEGATIVE,
                              doc="x the official weight (2 categorical, 1 dimensional); 0 removes the heads")
    unimodal_weight: float = key(1.0, bound=NON_NEGATIVE, doc="weight of the audio/video head losses")
    unimodal_loss: str = key("share", choices=UNIMODAL_LOSSES,
                             doc="share: every sample weighs 1/B (VAVL); mean: each head's loss is the mean "
                                 "over the samples with its stream (modality-balanced, docs/imbalance.md)")
    head_hidden: int = key(256, bound=AT_LEAST_1, doc="MLP head: d_in -> d_model -> head_hidden -> K")
    head_bottleneck_relu: bool = key(False, doc="ReLU between head_hidden and K (official MLP: none)")
    pooling: str = key("mean", choices=POOLINGS,
                       doc="mean_std: statistics pooling of every pooled vector (model/pooling.py)")
    # official-architecture switches (docs/fidelity.md V20-V22; on in the vavl_official_* presets)
    shared_input_proj: bool = key(False, doc="Linear(d, d) + dropout before the shared block, skipped by its residual")
    conformer_init: str = key("default", choices=CONFORMER_INITS,
                              doc="xavier: Xavier-uniform weights, zero biases on conformer linears")
    depthwise_bias: bool = key(True, doc="the official DepthwiseConv1d has no bias")
    # task
    task: str = key("categorical", choices=TASKS, doc="or dimensional (arousal, valence, dominance)")
    n_outputs: int = key(6, bound=AT_LEAST_1)
    fusion: str = key("vavl", choices=_fusions, doc="a strategy of model/registry.py FUSIONS")
    # every registered strategy's own keys, ((name, value), ...) sorted: see model_config
    options: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _complete(self.options))
        errors = problems_of(self) + flat_problems(dict(self.options), strategy_keys())
        errors = errors or _cross(self)  # cross-key rules only once each key is sane
        if errors:
            raise ValueError("invalid ModelConfig: " + "; ".join(errors))

    def __getattr__(self, name: str) -> Any:  # a strategy's own key
        for k, v in self.__dict__.get("options", ()):
            if k == name:
                return v
        raise AttributeError(f"ModelConfig has no key {name!r}")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        d.update(self.options)
        return d


BASE_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "options")


def _complete(options) -> tuple:
    """Every registered strategy key, with its default where `options` does not set it."""
    given = dict(options)
    unknown = sorted(set(given) - set(strategy_keys()))
    if unknown:
        raise ValueError(f"unknown ModelConfig keys: {unknown}")
    return tuple(sorted({k: given.get(k, s.default) for k, s in strategy_keys().items()}.items()))


def _cross(cfg: ModelConfig) -> list[str]:
    """Rules that tie keys together (each key's own rule is declared with it)."""
    errors = []
    if cfg.task == "dimensional" and cfg.n_outputs != 3:
        errors.append(f"dimensional task needs n_outputs=3, got {cfg.n_outputs}")
    if cfg.task == "categorical" and cfg.n_outputs < 2:
        errors.append(f"categorical task needs n_outputs >= 2, got {cfg.n_outputs}")
    if cfg.d_model % cfg.n_heads:
        errors.append(f"d_model={cfg.d_model} not divisible by n_heads={cfg.n_heads}")
    if cfg.fusion in FUSIONS:
        errors += strategy(cfg.fusion).check(cfg)
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
    unknown = sorted(set(overrides) - set(BASE_KEYS) - set(strategy_keys()))
    if unknown:
        raise ValueError(f"unknown ModelConfig fields: {unknown}")
    values = {**PRESETS[preset], **overrides}
    if values.get("task") == "dimensional" and "n_outputs" not in overrides:
        values["n_outputs"] = 3
    base = {k: v for k, v in values.items() if k in BASE_KEYS}
    options = tuple((k, v) for k, v in values.items() if k not in BASE_KEYS)
    return ModelConfig(**base, options=options)


def model_keys():
    """{flat key: KeySpec} of every model key: ModelConfig's and every strategy's own."""
    from study.keys import table_of

    table = {k: v for k, v in table_of(ModelConfig).items() if k != "options"}
    return {**table, **strategy_keys()}
