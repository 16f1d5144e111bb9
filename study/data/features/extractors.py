"""What an extraction is configured with and what it builds from that: `ExtractConfig`, the
extractors by name (one builder table per modality; the names and their help are in choices.py,
torch-free), the up-front checks (`preflight`) and the `fingerprint` that decides whether an
earlier run's shards are reused. extract.py runs the shards."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from study.data.corpora import check_options
from study.data.features import choices
from study.data.features.video import FaceConfig, FaceCropper


@dataclass(frozen=True)
class ExtractConfig:
    corpus: str                              # a key of study.data.corpora.CORPORA
    root: str
    out: str
    audio: str = "wav2vec2"                  # a key of choices.AUDIO
    video: str = "efficientnet-imagenet"     # a key of choices.VIDEO
    audio_model: str = "facebook/wav2vec2-large-robust"
    audio_layer: int | None = 12             # VAVL keeps 12 of the 24 layers
    audio_checkpoint: str | None = None      # a state dict over audio_model's config (VAVL's final_wav2vec.pt)
    audio_norm: str = "utterance"            # utterance | training (VAVL: one training-set mean/std) | none
    audio_max_seconds: float | None = None   # keep the first N s of each waveform (VAVL: 12)
    audio_norm_stats: tuple | None = None    # (mean, std) for audio_norm "training"; computed by extract()
    video_weights: str = "hub"               # efficientnet-imagenet: hub | FILE | none; hsemotion: FILE;
                                             # landmarks: hub | FILE
    partition: str | None = None
    corpus_options: dict = field(default_factory=dict)   # scan() keywords of the corpus (its OPTIONS)
    face_detector: str = "dlib"              # a key of choices.FACE_DETECTORS
    face_model: str | None = None            # yunet: ONNX file; haar: cascade xml (optional)
    video_fps: float | None = None           # subsample video to at most this rate
    detect_every: int = 1
    min_face: float = 0.1                    # smallest face side / shorter frame side
    dtype: str = "float16"
    shard_size: int = 32
    workers: int | None = None               # local shard processes (None: one per CPU, 1 on a GPU)
    ray: bool = False
    ray_address: str | None = None
    gpus_per_task: float = 0.0               # Ray: GPU share per shard task (0: CPU tasks)
    device: str | None = None                # default: cuda when available
    threads: int | None = None               # torch threads per process (Ray tasks: 1)
    progress: bool = True

    def scan_options(self) -> dict:
        """The corpus's scan() keywords: its defaults overlaid with corpus_options (checked)."""
        return check_options(self.corpus, dict(self.corpus_options))


# ----------------------------------------------------------------------------- extractors


_CACHE: dict[tuple, object] = {}      # one set of models per process (Ray reuses worker processes)


def build_extractors(cfg: ExtractConfig) -> tuple[object | None, object | None]:
    """(audio extractor, video extractor), either None when that modality is "none"."""
    device = cfg.device or default_device()
    key = (cfg.audio, cfg.audio_model, cfg.audio_layer, cfg.audio_checkpoint, cfg.audio_norm,
           cfg.audio_max_seconds, cfg.audio_norm_stats, cfg.video, cfg.video_weights, device)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = (_build(AUDIO_BUILDERS, "audio", cfg, device),
                       _build(VIDEO_BUILDERS, "video", cfg, device))
    return _CACHE[key]


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


RENAMED = {"efficientnet": "--video efficientnet is now --video efficientnet-imagenet (timm's ImageNet "
                           "EfficientNet-B2 on unaligned crops, not VAVL's features); VAVL's face "
                           "features are --video hsemotion --video-weights enet_b2_8_best.pt"}


def _build(table: dict, modality: str, cfg: ExtractConfig, device: str):
    return table[_known(table, modality, cfg)](cfg, device)


def _known(table: dict, modality: str, cfg: ExtractConfig) -> str:
    """cfg's extractor name for `modality`, refused when renamed or not in `table`."""
    name = getattr(cfg, modality)
    if name in RENAMED:
        raise ValueError(RENAMED[name])
    if name not in table:
        raise ValueError(f"--{modality} {name!r}: choose one of {sorted(table)}")
    return name


def _wav2vec2(cfg: ExtractConfig, device: str):
    from study.data.features.audio import Wav2Vec2Extractor
    return Wav2Vec2Extractor(cfg.audio_model, cfg.audio_layer, device, checkpoint=cfg.audio_checkpoint,
                             waveform=waveform_options(cfg))


def waveform_options(cfg: ExtractConfig):
    from study.data.features.audio import AUDIO_NORMS, WaveformOptions
    if cfg.audio_norm not in AUDIO_NORMS:
        raise ValueError(f"--audio-norm {cfg.audio_norm!r}: choose one of {list(AUDIO_NORMS)}")
    if cfg.audio_norm == "training" and cfg.audio_norm_stats is None:
        raise ValueError("--audio-norm training needs the training-set waveform mean/std "
                         "(extract() computes them before the shards run)")
    stats = tuple(cfg.audio_norm_stats) if cfg.audio_norm_stats is not None else None
    return WaveformOptions(cfg.audio_norm, stats, cfg.audio_max_seconds)


def _logmel(cfg: ExtractConfig, device: str):
    from study.data.features.audio import LogMelExtractor
    return LogMelExtractor(device=device)


def _opensmile(feature_set: str):
    def build(cfg: ExtractConfig, device: str):
        from study.data.features.audio import OpenSmileExtractor
        return OpenSmileExtractor(feature_set)
    return build


def _efficientnet(cfg: ExtractConfig, device: str):
    from study.data.features.video import EfficientNetExtractor
    return EfficientNetExtractor(cfg.video_weights, device)


def _hsemotion(cfg: ExtractConfig, device: str):
    from study.data.features.video import HSEmotionExtractor
    return HSEmotionExtractor(cfg.video_weights, device)


def _pixels(cfg: ExtractConfig, device: str):
    from study.data.features.video import PixelExtractor
    return PixelExtractor()


def _landmarks(cfg: ExtractConfig, device: str):
    from study.data.features.video import LandmarkExtractor
    return LandmarkExtractor(None if cfg.video_weights in ("hub", "none") else cfg.video_weights)


# name -> builder(cfg, device); the names and their help live in choices.py (torch-free)
AUDIO_BUILDERS = {"wav2vec2": _wav2vec2, "logmel": _logmel, "egemaps": _opensmile("egemaps"),
                  "compare": _opensmile("compare"), "none": lambda cfg, device: None}
VIDEO_BUILDERS = {"efficientnet-imagenet": _efficientnet, "hsemotion": _hsemotion, "pixels": _pixels,
                  "landmarks": _landmarks, "none": lambda cfg, device: None}
assert set(AUDIO_BUILDERS) == set(choices.AUDIO) and set(VIDEO_BUILDERS) == set(choices.VIDEO)


def face_config(cfg: ExtractConfig) -> FaceConfig:
    return FaceConfig(detector=cfg.face_detector, model=cfg.face_model,
                      detect_every=cfg.detect_every, min_size_frac=cfg.min_face)


def preflight(cfg: ExtractConfig) -> None:
    """Errors a shard would hit, raised once before any shard starts (bad names, offline models)."""
    from study.data.features.audio import check_audio_model
    for modality, table in (("audio", AUDIO_BUILDERS), ("video", VIDEO_BUILDERS)):
        _known(table, modality, cfg)
    if cfg.audio == "wav2vec2":
        check_audio_model(cfg.audio_model)
        waveform_options(cfg)
        if cfg.audio_checkpoint and not Path(cfg.audio_checkpoint).is_file():
            raise FileNotFoundError(f"--audio-checkpoint {cfg.audio_checkpoint}: no such file")
    if cfg.video == "hsemotion" and not Path(cfg.video_weights).is_file():
        raise FileNotFoundError(f"--video hsemotion --video-weights {cfg.video_weights}: no such file "
                                "(HSEmotion's enet_b2_8_best.pt, a local file; nothing is downloaded)")
    if cfg.video != "none":
        FaceCropper(face_config(cfg))                 # detector missing / model file absent


def fingerprint(cfg: ExtractConfig) -> dict:
    """What must match for shards of an earlier run to be reused."""
    keys = ("corpus", "audio", "video", "audio_model", "audio_layer", "audio_checkpoint",
            "audio_norm", "audio_max_seconds", "video_weights", "video_fps", "detect_every",
            "min_face", "dtype")
    out = {k: getattr(cfg, k) for k in keys}
    if cfg.video != "none":
        out |= {"face_detector": cfg.face_detector, "face_model": cfg.face_model}
    if cfg.audio_norm_stats is not None:
        out["audio_norm_stats"] = [float(v) for v in cfg.audio_norm_stats]
    return out
