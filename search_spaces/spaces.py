"""Define-by-run search spaces: plain functions of an Optuna trial returning flat config keys.

Each function suggests the parameters of one concern and returns them as a flat dict whose
keys are ModelConfig / protocol / TrainConfig field names. Spaces are combined by name with
`search_spaces.combine(names, fixed)`; keys that the study fixes (a cell's fusion and
train_missing_rate, the spec's fixed params) are never suggested (see `FixingTrial`).
"""

from __future__ import annotations

from model.registry import FUSIONS


def architecture(trial) -> dict:
    """VAVL encoder/shared-block sizes at paper scale (GPU)."""
    p = {
        "d_model": trial.suggest_categorical("d_model", [128, 256, 512]),
        "n_heads": trial.suggest_categorical("n_heads", [4, 8]),
        "enc_layers": trial.suggest_int("enc_layers", 1, 4),
        "kernel_size": trial.suggest_categorical("kernel_size", [15, 31]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.4),
        "recon_weight": trial.suggest_float("recon_weight", 0.0, 2.0),
        "pooling": trial.suggest_categorical("pooling", ["mean", "mean_std"]),
    }
    return {**p, **_shared_block(trial, max_layers=3)}


def architecture_tiny(trial) -> dict:
    """Same knobs as `architecture`, laptop-sized ranges (tiny preset, 2-core CPU)."""
    p = {
        "d_model": trial.suggest_categorical("d_model", [16, 32]),
        "n_heads": trial.suggest_categorical("n_heads", [2, 4]),
        "enc_layers": trial.suggest_int("enc_layers", 1, 2),
        "kernel_size": trial.suggest_categorical("kernel_size", [3, 7]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "recon_weight": trial.suggest_float("recon_weight", 0.0, 1.0),
        # statistics pooling (mean + std, model/pooling.py): what the linear probe reads
        "pooling": trial.suggest_categorical("pooling", ["mean", "mean_std"]),
    }
    return {**p, **_shared_block(trial, max_layers=1)}


def _shared_block(trial, max_layers: int) -> dict:
    use_shared = trial.suggest_categorical("use_shared", [True, False])
    if not use_shared:  # ablation: no shared layers, residual is moot
        return {"use_shared": False, "shared_layers": 0}
    return {
        "use_shared": True,
        "shared_layers": trial.suggest_int("shared_layers", 1, max_layers),
        "shared_residual": trial.suggest_categorical("shared_residual", [True, False]),
    }


def optimisation(trial) -> dict:
    """AdamW learning rate / weight decay and batch size."""
    return {
        "lr": trial.suggest_float("lr", 1e-5, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
    }


def optimisation_tiny(trial) -> dict:
    """`optimisation` for the tiny laptop demo: a few epochs only learn at higher rates (1e-3
    leaves the audio branch under the linear probe after 5 epochs: docs/baselines.md)."""
    return {
        "lr": trial.suggest_float("lr", 2e-3, 6e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32]),
    }


def fusion(trial) -> dict:
    """Fusion strategy (categorical) with each strategy's own parameters (model/registry.py)."""
    name = trial.suggest_categorical("fusion", list(FUSIONS))
    return {"fusion": name, **FUSIONS[name].params(trial)}


def missing(trial) -> dict:
    """Missing-data augmentation, a training choice: modality dropout (frame dropout is in the
    `augmentation` space). The data conditions (`train_missing_rate`, `audio_only_share`) are
    cell dimensions or fixed per study, never searched here (see `data_conditions`)."""
    return {"modality_dropout": trial.suggest_float("modality_dropout", 0.0, 0.3)}


def balance(trial) -> dict:
    """Training that balances the modalities (docs/imbalance.md): curriculum modality dropout
    (the rate rises over the first E epochs to its maximum; MuteBench, arXiv 2605.15235) and
    OGM-GE gradient modulation with its strength alpha (Peng et al., CVPR 2022), and the
    modality-balanced unimodal loss (each head's loss the mean over the samples with its stream)."""
    out = {"modality_dropout": trial.suggest_float("modality_dropout", 0.0, 0.5),
           "unimodal_loss": trial.suggest_categorical("unimodal_loss", ["share", "mean"]),
           "modality_dropout_curriculum": trial.suggest_categorical("modality_dropout_curriculum", [0, 3, 6]),
           "ogm_ge": trial.suggest_categorical("ogm_ge", [False, True])}
    if out["ogm_ge"]:
        out["ogm_alpha"] = trial.suggest_float("ogm_alpha", 0.1, 1.0)
    return out


def data_conditions(trial) -> dict:
    """Searches a data condition inside a cell (`audio_only_share`): each cell may then pick its
    easiest mix, so a spec must opt in with `search_data_conditions: true` (the report flags it)."""
    return {"audio_only_share": trial.suggest_float("audio_only_share", 0.2, 0.8)}


def augmentation(trial) -> dict:
    """Training-time counterparts of the frame-level conditions: frame dropout and feature noise
    (training choices, recorded with every trial; the data conditions are the protocol's)."""
    return {
        "frame_dropout": trial.suggest_float("frame_dropout", 0.0, 0.3),
        "noise_aug": trial.suggest_float("noise_aug", 0.0, 0.5),
        "noise_aug_snr_db": trial.suggest_categorical("noise_aug_snr_db", [0.0, 10.0, 20.0]),
    }
