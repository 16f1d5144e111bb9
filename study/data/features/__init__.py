"""Feature extraction from raw media: audio (wav2vec2 / log-mel), video (face crops -> EfficientNet /
pixels), sharded and resumable, merged into a study.data.dataset directory."""
