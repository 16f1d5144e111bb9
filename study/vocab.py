"""The study's vocabulary, shared by `study` and `reports` (a leaf: imports nothing of the project,
no torch, no pandas).

- Evaluation conditions: the named three, the condition families (what each level removes or
  perturbs, its x axis, its default levels), condition names and their parsing, derived
  conditions (`worst_single`, the `robustness*` areas).
- Data conditions vs augmentations: the data a study is about vs training choices.
- Stages of a study, and `StudyDir`: the name of every file a study writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# ----------------------------------------------------------------------------- conditions

NAMED_CONDITIONS = ("av", "audio_only", "video_only")
"""Both streams; audio only (video truly removed); video only."""
TEST_RATES = tuple(round(0.1 * i, 1) for i in range(10))  # 0.0 .. 0.9, the miss family's levels
STREAMS = ("audio", "video")
WORST_SINGLE = "worst_single"  # the worse of audio_only and video_only (derived, objectives only)
ROBUSTNESS = "robustness"  # the normalised area under the miss family's curve
MEI = "mei"  # Modality Equity Index (derived from av / audio_only / video_only; docs/imbalance.md)
MLI = "mli"  # Modality Learning Index (from training gradient norms; docs/imbalance.md)
GRID = "miss_grid"  # the family of per-modality test rates: miss_a<p_a>_v<p_v>
GRID_RATES = (0.0, 0.3, 0.6)  # default levels of each axis of the grid (pairs with p_a + p_v > 1 left out)


@dataclass(frozen=True)
class Family:
    """One condition family: what a level does, on which stream, and its default levels."""

    kind: str  # "miss" | "drop" | "gap" | "noise" | "shift"
    stream: str | None  # the perturbed stream (None: either, per utterance)
    levels: tuple[float, ...]  # default levels (x axis of the family's curve)
    axis: str  # what the level means, for curves
    suffix: str = ""  # unit in the condition name: noise_audio_10db, async_200ms

    def describe(self, level: float) -> str:
        """What this family does at `level`, in words (reports, docs)."""
        what = {
            "miss": f"{level:.0%} of test utterances lose one whole stream",
            "drop": f"{level:.0%} of the {self.stream} frames are masked at random",
            "gap": f"one contiguous masked gap covers {level:.0%} of the {self.stream}",
            "noise": f"Gaussian noise on the {self.stream} features at {level:g} dB SNR",
            "shift": f"the {self.stream} is delayed by {level:g} ms against the other stream",
        }
        return what[self.kind]


FAMILIES: dict[str, Family] = {
    # Default levels keep the demo's wall time within 1.3x of the whole-modality protocol alone:
    # each level but the free ones (drop/gap 0.0 and async 0 ms are `av`) costs a forward pass.
    "miss": Family("miss", None, TEST_RATES, "share of test utterances that lose one stream"),
    "drop_audio": Family("drop", "audio", (0.0, 0.5, 0.9), "share of audio frames dropped"),
    "drop_video": Family("drop", "video", (0.0, 0.5, 0.9), "share of video frames dropped"),
    # a burst of silence, a face leaving the frame
    "gap_audio": Family("gap", "audio", (0.0, 0.3, 0.6), "share of audio in one gap"),
    "gap_video": Family("gap", "video", (0.0, 0.3, 0.6), "share of video in one gap"),
    # SNR in dB against the training-set feature variance
    "noise_audio": Family("noise", "audio", (10.0, 0.0), "audio SNR (dB; lower = noisier)", "db"),
    "noise_video": Family("noise", "video", (10.0, 0.0), "video SNR (dB; lower = noisier)", "db"),
    "async": Family("shift", "audio", (0.0, 200.0, 400.0), "audio delay (ms)", "ms"),
}
EXTRA_FAMILIES = tuple(f for f in FAMILIES if f != "miss")
"""Families with a forward pass per level; all of them run by default."""


@dataclass(frozen=True)
class Condition:
    """One evaluation condition: its name, family and level (None for the named three)."""

    name: str
    family: str | None = None
    level: float | None = None  # the miss_grid family: the audio rate p_a
    level_video: float | None = None  # the miss_grid family: the video rate p_v

    @property
    def test_missing_rate(self) -> float | None:
        """The share of test utterances that lose a stream (miss: the level; grid: p_a + p_v)."""
        if self.family == GRID:
            return round(self.level + self.level_video, 9)
        return self.level if self.family == "miss" else None

    @property
    def cheap(self) -> bool:
        """Composed from the av / audio-only / video-only passes (no forward pass of its own)."""
        return self.family in (None, "miss", GRID)

    @property
    def removes(self) -> tuple[str, ...]:
        """The streams this condition takes away entirely (for every utterance)."""
        return {"audio_only": ("video",), "video_only": ("audio",)}.get(self.name, ())

    def describe(self) -> str:
        named = {"av": "both streams", "audio_only": "audio only (video removed)",
                 "video_only": "video only (audio removed)"}
        if self.family == GRID:
            return (f"{self.level:.0%} of test utterances lose their audio, {self.level_video:.0%} "
                    "their video (never both)")
        return named[self.name] if self.family is None else FAMILIES[self.family].describe(self.level)


def condition_name(family: str, level: float) -> str:
    fam = FAMILIES[family]
    if fam.suffix:
        return f"{family}_{level:g}{fam.suffix}"
    return f"{family}_{level:.1f}" if abs(level * 10 - round(level * 10)) < 1e-9 else f"{family}_{level:g}"


def miss_name(rate: float) -> str:
    return condition_name("miss", rate)


def grid_name(p_audio: float, p_video: float) -> str:
    """miss_a0.3_v0.1: p_audio of the utterances lose their audio, p_video their video."""
    return f"miss_a{p_audio:g}_v{p_video:g}"


def grid_conditions(audio_rates, video_rates) -> list[Condition]:
    """The test grid over per-modality missing rates: every (p_a, p_v) with p_a + p_v <= 1 (an
    utterance never loses both streams), audio-major."""
    return [Condition(grid_name(a, v), GRID, float(a), float(v))
            for a in audio_rates for v in video_rates if a + v <= 1.0 + 1e-9]


def area_name(family: str) -> str:
    """The condition name of a family's area under its curve."""
    return ROBUSTNESS if family == "miss" else f"{ROBUSTNESS}_{family}"


def is_area(name: object) -> bool:
    return isinstance(name, str) and (name == ROBUSTNESS or name.startswith(ROBUSTNESS + "_"))


_LEVEL = re.compile(r"([a-z_]+?)_(-?[0-9]+(?:\.[0-9]*)?)(db|ms)?")
_GRID = re.compile(r"miss_a([0-9]+(?:\.[0-9]*)?)_v([0-9]+(?:\.[0-9]*)?)")


def parse_condition(name: str) -> Condition:
    """The Condition a name stands for (`av`, `miss_0.3`, `noise_audio_10db`, `async_200ms`);
    ValueError for an area, a derived condition or an unknown name."""
    if name in NAMED_CONDITIONS:
        return Condition(name)
    grid = _GRID.fullmatch(name)
    if grid:
        return Condition(name, GRID, float(grid.group(1)), float(grid.group(2)))
    for family in sorted(FAMILIES, key=len, reverse=True):
        suffix = FAMILIES[family].suffix
        if name.startswith(family + "_") and name.endswith(suffix):
            try:
                return Condition(name, family, float(name[len(family) + 1:len(name) - len(suffix)]))
            except ValueError:
                break
    raise ValueError(f"unknown evaluation condition {name!r}")


SELECT_CONDITIONS = (*NAMED_CONDITIONS, ROBUSTNESS, WORST_SINGLE, MEI, MLI) + tuple(miss_name(r) for r in TEST_RATES)
"""Dev conditions evaluated every epoch: what a checkpoint or an objective may be chosen on."""

# ----------------------------------------------------------------------------- data vs training

DATA_CONDITIONS = ("train_missing_rate", "audio_only_share")
"""Protocol keys that describe the data a study is about: cell dimensions or fixed per study."""
AUGMENTATIONS = ("modality_dropout", "modality_dropout_curriculum", "frame_dropout", "noise_aug", "noise_aug_snr_db")
"""Training choices that perturb the training data (searchable, never folded into the data)."""
PACK_VARIES = ("seed", *DATA_CONDITIONS, *AUGMENTATIONS, "lr", "weight_decay", "beta1", "beta2", "grad_clip",
               "patience", "unimodal_weight", "unimodal_loss")
"""Flat keys the members of one pack (one stacked model, docs/packing.md) may differ in: what the
pack's exactness tests vary (tests/modelling/test_packed.py). Not recon_weight: 0 removes the
reconstruction heads, so a pack varies it only where no member has 0."""

# ----------------------------------------------------------------------------- a study's files

STAGES = ("search", "rerun", "final")


@dataclass(frozen=True)
class StudyDir:
    """Every file a study writes, by name (docs/CONTRACTS.md says what each holds)."""

    root: Path

    SPEC = "spec.yaml"
    META = "study.json"
    RESULTS = "results.parquet"
    CURVES = "curves.parquet"
    OPTUNA_DB = "optuna.db"
    REPORT = "report.html"
    LOCK = ".lock"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def spec(self) -> Path:
        return self.root / self.SPEC

    @property
    def meta(self) -> Path:
        return self.root / self.META

    @property
    def results(self) -> Path:
        return self.root / self.RESULTS

    @property
    def curves(self) -> Path:
        return self.root / self.CURVES

    @property
    def optuna_db(self) -> Path:
        return self.root / self.OPTUNA_DB

    @property
    def report(self) -> Path:
        return self.root / self.REPORT

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK

    @property
    def parts(self) -> Path:
        return self.root / "parts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    def progress(self, experiment: str) -> Path:
        return self.root / "progress" / f"{experiment}.json"

    def stage_marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.done"


MIRRORED = (StudyDir.SPEC, StudyDir.META, StudyDir.RESULTS, StudyDir.CURVES, StudyDir.OPTUNA_DB,
            StudyDir.REPORT, "parts/*.parquet", "stages/*.done", "progress/*.json")
"""What a remote study holds besides Ray's files (never the lock, logs or ray/)."""
