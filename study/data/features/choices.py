"""The extractor and face-detector choices of `features extract`, with one line on each.

Torch-free (the CLI's --help reads it); extractors.py maps the same names to builders, and a test
checks that both tables agree.
"""
from __future__ import annotations

AUDIO = {
    "wav2vec2": "wav2vec2-family model (--audio-model, VAVL: wav2vec2-large-robust cut to 12 layers; "
                "VAVL's fine-tuned weights with --audio-checkpoint final_wav2vec.pt), 1024-d at 50 Hz; "
                "downloads the model unless --audio-model is a local directory or cached (offline: "
                "fails at once)",
    "logmel": "80 log-mel bands, 25 ms window, 20 ms hop (50 Hz); no weights",
    "egemaps": "openSMILE eGeMAPSv02 low-level descriptors (pitch, jitter, shimmer, formants, "
               "loudness, MFCC 1-4...), 25-d at 100 Hz; no download",
    "compare": "openSMILE ComParE_2016 low-level descriptors (energy, spectral, MFCC 1-14, voicing), "
               "65-d at 100 Hz; no download",
    "none": "no audio features (video-only dataset)",
}

VIDEO = {
    "efficientnet-imagenet": "timm efficientnet_b2 with ImageNet weights on the unaligned 256-px face "
                             "crop, 1408-d per frame (NOT VAVL's features); --video-weights hub "
                             "downloads them, or give a local file",
    "hsemotion": "VAVL's face features: HSEmotion's AffectNet EfficientNet-B2 (enet_b2_8_best.pt, "
                 "classifier removed), 1408-d, on dlib 5-point aligned 224-px faces; --video-weights "
                 "FILE (local; a pickled module or a state dict), nothing downloaded",
    "pixels": "face crop as 16x16 grey pixels + 8-bin R/G/B histograms, 280-d; no weights",
    "landmarks": "dlib's 68 face landmarks on the crop (x, y in crop units), 136-d: a face-expression "
                 "geometry; model shipped by the face_recognition_models package, no download",
    "none": "no video features (audio-only dataset)",
}

FACE_DETECTORS = {
    "dlib": "dlib's HOG frontal-face detector, compiled into dlib (no model file)",
    "yunet": "OpenCV's FaceDetectorYN (YuNet) on a user-supplied ONNX file (--face-model)",
    "haar": "OpenCV's Haar cascade (OpenCV < 5 only; 5.x removed it)",
}


def describe(table: dict[str, str]) -> str:
    """'name: what; name: what' for an argparse help string (% escaped)."""
    return "; ".join(f"{k}: {v}" for k, v in table.items()).replace("%", "%%")
