"""Audio: decoding any file to 16 kHz mono, and the frame-level extractors.

- `LogMelExtractor`: log mel filterbank from a torch STFT (no weights), hop 20 ms (50 Hz).
- `Wav2Vec2Extractor`: a wav2vec2-family model through `transformers` (local path or hub name),
  truncated to its first `layer` transformer layers as VAVL does (12 of wav2vec2-large-robust's
  24); the output is the truncated encoder's last hidden state (50 Hz).
- `OpenSmileExtractor`: openSMILE's eGeMAPSv02 (25) or ComParE_2016 (65) low-level descriptors
  at 100 Hz; the `opensmile` package ships its binary and configs (no download).
Extractors take a list of waveforms and return a list of (T, D) float32 arrays; each has `dim`,
`name` and `rate_hz`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16000
MIN_SAMPLES = 400          # one 25 ms window: the shortest input that yields a frame
SOUNDFILE_EXTS = (".wav", ".flac", ".ogg")


class MediaError(Exception):
    """A media file that cannot give features (unreadable, empty, no face...): data, not a bug."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex (weights provenance in dataset.json)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelUnavailable(RuntimeError):
    """A pretrained model that is neither a local directory nor loadable from the hub/cache."""


def model_unavailable_message(model: str, flag: str, err: BaseException | None = None) -> str:
    """The project's message for a model that cannot be loaded (offline, not cached, typo)."""
    cause = f" ({type(err).__name__}: {str(err).strip().splitlines()[0][:200]})" if err and str(err).strip() else ""
    return (f"cannot load {flag} {model!r}: it is not a local model directory, and it is neither in "
            f"the Hugging Face cache nor downloadable (no network, or HF_HUB_OFFLINE=1){cause}.\n"
            f"  - on a machine with network: `hf download {model} --local-dir DIR`, copy DIR here, "
            f"then pass {flag} DIR;\n"
            "  - or use an extractor that downloads nothing: --audio logmel, --audio egemaps or "
            "--audio compare (openSMILE).")


HUB_HOST = ("huggingface.co", 443)


def hub_reachable(timeout: float = 1.0) -> bool:
    """False at once when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set, else whether a TCP
    connection to the hub opens within `timeout` s (never the ~28 s of transformers' retries)."""
    import os
    import socket
    if any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
           for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _local_only(model: str) -> bool:
    """Load `model` without the network: a local directory, a cached hub name, or no hub."""
    if Path(model).is_dir():
        return True
    try:
        from transformers import AutoConfig
        AutoConfig.from_pretrained(model, local_files_only=True)
        return True                                # in the Hugging Face cache
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise ModelUnavailable(model_unavailable_message(model, "--audio-model")) from None
    return False


def check_audio_model(model: str) -> None:
    """Fail early, with the project's message, when `model` cannot be loaded (reads its config
    only). Offline (HF_HUB_OFFLINE, or no connection to the hub within 1 s) fails at once."""
    try:
        from transformers import AutoConfig
        AutoConfig.from_pretrained(model, local_files_only=_local_only(model))
    except (OSError, ValueError) as err:          # offline, not cached, unknown repo, bad dir
        raise ModelUnavailable(model_unavailable_message(model, "--audio-model", err)) from None


def load_audio(path: str | Path) -> np.ndarray:
    """Decode `path` to a (N,) float32 waveform, mono, 16 kHz. Raises MediaError."""
    path = Path(path)
    if path.suffix.lower() in SOUNDFILE_EXTS:
        wave, sr = _read_soundfile(path)
    else:
        wave, sr = _read_av_audio(path)
    wave = resample(wave, sr, SAMPLE_RATE)
    if wave.size == 0:
        raise MediaError("empty audio (0 samples)")
    if not np.isfinite(wave).all():
        raise MediaError("audio holds NaN or Inf samples")
    if wave.size < MIN_SAMPLES:
        raise MediaError(f"audio too short ({wave.size} samples at 16 kHz)")
    return wave


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)     # (N, C)
    except Exception as err:                                               # libsndfile errors
        raise MediaError(f"unreadable audio: {err}") from err
    return data.mean(axis=1), int(sr)


def _read_av_audio(path: Path) -> tuple[np.ndarray, int]:
    """Audio stream of a video/audio container through PyAV, resampled by libswresample."""
    import av
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError("no audio stream in the file")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks = []
            for frame in container.decode(audio=0):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except MediaError:
        raise
    except Exception as err:                                               # av.error.*
        raise MediaError(f"unreadable audio: {err}") from err
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return wave, SAMPLE_RATE


def resample(wave: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy), exact for rational rate ratios."""
    if sr == target or wave.size == 0:
        return wave.astype(np.float32)
    from scipy.signal import resample_poly
    g = gcd(int(sr), int(target))
    return resample_poly(wave, target // g, int(sr) // g).astype(np.float32)


# ----------------------------------------------------------------------------- log-mel


@dataclass(frozen=True)
class LogMelConfig:
    n_mels: int = 80
    n_fft: int = 512
    win_length: int = 400       # 25 ms
    hop_length: int = 320       # 20 ms -> 50 Hz, the wav2vec2 frame rate
    fmin: float = 0.0
    fmax: float = 8000.0


def mel_filterbank(cfg: LogMelConfig, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    bins = np.linspace(0, sr / 2, cfg.n_fft // 2 + 1)                        # (F,)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]      # (M, 1) each
    up = (bins[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - bins[None]) / np.maximum(hi - mid, 1e-9)
    return np.clip(np.minimum(up, down), 0.0, None).astype(np.float32)      # (M, F)


class LogMelExtractor:
    """(N,) waveform -> (N // hop + 1, n_mels) log mel energies. Needs no weights."""

    rate_hz = SAMPLE_RATE / 320

    def __init__(self, cfg: LogMelConfig = LogMelConfig(), device: str = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.dim = cfg.n_mels
        self.rate_hz = SAMPLE_RATE / cfg.hop_length
        self.name = f"logmel{cfg.n_mels}"
        self.fbank = torch.from_numpy(mel_filterbank(cfg)).to(self.device)   # (M, F)
        self.window = torch.hann_window(cfg.win_length, device=self.device)

    @torch.no_grad()
    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return [self._one(w) for w in waves]

    def _one(self, wave: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(self.device)
        spec = torch.stft(x, self.cfg.n_fft, self.cfg.hop_length, self.cfg.win_length,
                          self.window, center=True, return_complex=True)    # (F, T)
        power = spec.abs().pow(2)
        mel = self.fbank @ power                                             # (M, T)
        return torch.log(mel + 1e-6).T.cpu().numpy()                        # (T, M)


# ----------------------------------------------------------------------------- openSMILE


OPENSMILE_SETS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}


class OpenSmileExtractor:
    """openSMILE low-level descriptors, 10 ms hop (100 Hz): egemaps 25-d, compare 65-d."""

    rate_hz = 100.0

    def __init__(self, feature_set: str = "egemaps"):
        try:
            import opensmile
        except ImportError as err:
            raise ImportError(f"--audio {feature_set} needs opensmile: pip install "
                              "'avstudy[media]'") from err
        if feature_set not in OPENSMILE_SETS:
            raise ValueError(f"openSMILE feature set {feature_set!r}: choose one of {sorted(OPENSMILE_SETS)}")
        self.smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, OPENSMILE_SETS[feature_set]),
                                     feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        self.columns = list(self.smile.feature_names)
        self.dim = len(self.columns)
        self.name = f"opensmile-{opensmile.__version__}:{OPENSMILE_SETS[feature_set]}:lld"

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for wave in waves:
            df = self.smile.process_signal(np.ascontiguousarray(wave, dtype=np.float32), SAMPLE_RATE)
            out.append(df.to_numpy(dtype=np.float32))                        # (T, D)
        return out


# ----------------------------------------------------------------------------- wav2vec2


AUDIO_NORMS = ("utterance", "training", "none")  # z-score per utterance | one training-set mean/std | none


@dataclass(frozen=True)
class WaveformOptions:
    """What the waveform goes through before wav2vec2 (recorded in dataset.json's provenance).

    norm "utterance": per-utterance z-score when the model's preprocessor says do_normalize (the
    Hugging Face default); "training": one mean/std over every training-set sample, `stats`
    (VAVL utils/normalizer.py get_norm_stat_for_wav); "none": raw. max_seconds: keep the first
    N seconds (VAVL: 12; None keeps all)."""

    norm: str = "utterance"
    stats: tuple[float, float] | None = None
    max_seconds: float | None = None

    def apply(self, wave: np.ndarray, model_normalizes: bool) -> np.ndarray:
        if self.max_seconds:
            wave = wave[:int(self.max_seconds * SAMPLE_RATE)]
        if self.norm == "training":
            mean, std = self.stats
            return ((wave - mean) / (std + 1e-6)).astype(np.float32)
        if self.norm == "utterance" and model_normalizes:
            return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)
        return wave


def waveform_stats(waves) -> tuple[float, float]:
    """(mean, std) over every sample of an iterable of waveforms (one pass, float64 sums)."""
    n, total, squares = 0, 0.0, 0.0
    for w in waves:
        w = np.asarray(w, np.float64)
        n, total, squares = n + w.size, total + w.sum(), squares + (w * w).sum()
    if n == 0:
        raise ValueError("no training-set audio to compute the waveform mean/std from")
    mean = total / n
    return float(mean), float(np.sqrt(max(squares / n - mean * mean, 0.0)))


class Wav2Vec2Extractor:
    """wav2vec2/HuBERT/WavLM hidden states at 50 Hz, from `model` (local dir or hub name).

    checkpoint: a state dict to load over the (truncated) model, e.g. VAVL's fine-tuned
    `final_wav2vec.pt` (wav2vec2-large-robust with 12 layers): the architecture comes from
    `model`'s config only (a local directory holding config.json; its weights, if any, are
    replaced), so nothing is downloaded. `sha256` is the checkpoint file's hash.
    """

    rate_hz = 50.0

    def __init__(self, model: str, layer: int | None = None, device: str = "cpu",
                 batch_seconds: float = 160.0, checkpoint: str | None = None,
                 waveform: WaveformOptions = WaveformOptions()):
        net = _load_model(model, checkpoint)
        total = net.config.num_hidden_layers
        layer = total if layer is None else int(layer)
        if not 1 <= layer <= total:
            raise ValueError(f"--audio-layer {layer}: {model} has {total} transformer layers")
        net.encoder.layers = net.encoder.layers[:layer]                     # VAVL: keep 12 of 24
        self.sha256 = _load_checkpoint(net, checkpoint) if checkpoint else None
        self.net = net.eval().to(device)
        self.device, self.layer = torch.device(device), layer
        self.dim = int(net.config.hidden_size)
        base = Path(model).name if Path(model).exists() else model
        ckpt = f":{Path(checkpoint).name}:sha256={self.sha256[:12]}" if checkpoint else ""
        self.name = f"{base}:layer{layer}{ckpt}"
        self.waveform = waveform
        self.normalize = _do_normalize(model)
        # Group-normed feature encoders (wav2vec2-base) see padding: run those one at a time.
        self.can_pad = getattr(net.config, "feat_extract_norm", "layer") == "layer"
        self.batch_samples = int(batch_seconds * SAMPLE_RATE)

    @torch.no_grad()
    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(waves)
        for idx in self._batches([len(w) for w in waves]):
            for i, feats in zip(idx, self._forward([waves[i] for i in idx])):
                out[i] = feats
        return out

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Length-sorted batches of at most batch_samples padded samples (singletons on CPU)."""
        order = np.argsort(lengths)
        if not self.can_pad or self.device.type == "cpu":
            return [[int(i)] for i in order]
        batches, cur = [], []
        for i in order:
            if cur and lengths[i] * (len(cur) + 1) > self.batch_samples:
                batches.append(cur)
                cur = []
            cur.append(int(i))
        return batches + [cur] if cur else batches

    @torch.no_grad()
    def _forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        waves = [self.waveform.apply(w, self.normalize) for w in waves]  # cut, then z-score
        lens = [len(w) for w in waves]
        x = np.zeros((len(waves), max(lens)), np.float32)                   # (B, N)
        mask = np.zeros((len(waves), max(lens)), np.int64)
        for i, w in enumerate(waves):
            x[i, :len(w)], mask[i, :len(w)] = w, 1
        kwargs = {"attention_mask": torch.from_numpy(mask).to(self.device)} if len(waves) > 1 else {}
        hidden = self.net(torch.from_numpy(x).to(self.device), **kwargs).last_hidden_state  # (B, T, D)
        frames = self.net._get_feat_extract_output_lengths(torch.tensor(lens))             # (B,)
        return [hidden[i, :int(t)].float().cpu().numpy() for i, t in enumerate(frames)]


def _load_model(model: str, checkpoint: str | None):
    """The transformers model of `model`; with a checkpoint, built from the config alone."""
    from transformers import AutoConfig, AutoModel
    try:
        local = _local_only(model)
        if checkpoint:
            return AutoModel.from_config(AutoConfig.from_pretrained(model, local_files_only=local))
        return AutoModel.from_pretrained(model, local_files_only=local)
    except (OSError, ValueError) as err:      # offline, not cached, unknown repo, bad dir
        raise ModelUnavailable(model_unavailable_message(model, "--audio-model", err)) from None


def _load_checkpoint(net, checkpoint: str) -> str:
    """Load a state dict (weights_only) over `net`, strictly; returns the file's SHA-256.

    Keys may carry a `wav2vec2.` / `module.` prefix (a wrapped model's state dict)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"--audio-checkpoint {checkpoint}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    for prefix in ("module.", "wav2vec2.", "wav2vec_model."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"--audio-checkpoint {checkpoint} does not fit --audio-model's architecture "
                         f"truncated to --audio-layer: {str(err).splitlines()[0][:300]}") from None
    return file_sha256(path)


def _do_normalize(model: str) -> bool:
    """The model's preprocessor_config.json do_normalize flag (per-utterance z-score); True if unknown."""
    path = Path(model) / "preprocessor_config.json"
    if path.is_file():
        import json
        return bool(json.loads(path.read_text()).get("do_normalize", True))
    try:
        from transformers import AutoFeatureExtractor
        local = Path(model).exists() or not hub_reachable()               # never a network wait
        fe = AutoFeatureExtractor.from_pretrained(model, local_files_only=local)
        return bool(getattr(fe, "do_normalize", True))
    except Exception:                                                      # offline or no config
        return True
