"""Tiny raw corpora in the CREMA-D, MSP-IMPROV and IEMOCAP layouts, for adapter/extraction tests.

Audio: tones + noise at several sample rates, mono and stereo. Video: a drawn face (grey oval,
dark eyes and brows, nose, mouth) that dlib's HOG detector and OpenCV's Haar cascade detect, and
whose mouth dlib's 68-point landmarks follow, encoded with
PyAV (FLV1 + AAC for .flv, MPEG-4 + PCM for .avi). Broken cases: garbage bytes, an empty wav, a
video without a face. Every generator returns what it made so tests can assert on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CREMA_CLASSES = ("angry", "sad", "disgust", "fear", "neutral", "happy")
CREMA_CODES = ("ANG", "SAD", "DIS", "FEA", "NEU", "HAP")


def face_frame(h: int = 120, w: int = 160, cx: int | None = None, cy: int | None = None,
               scale: float = 0.8, face: bool = True, seed: int = 0, mouth: float = 1.0) -> np.ndarray:
    """(h, w, 3) uint8 RGB frame with a face-like drawing (or textured background only).

    `mouth` scales the mouth's width (1: neutral; 1.6: a wide, smile-like mouth).
    """
    import cv2
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 90, np.uint8) + rng.integers(0, 12, (h, w), dtype=np.uint8)
    if face:
        cx, cy = cx if cx is not None else w // 2, cy if cy is not None else h // 2
        s = scale
        cv2.ellipse(img, (cx, cy), (int(38 * s), int(50 * s)), 0, 0, 360, 200, -1)
        for dx in (-16, 16):
            ex, ey = cx + int(dx * s), cy - int(12 * s)
            cv2.ellipse(img, (ex, ey), (int(9 * s), int(5 * s)), 0, 0, 360, 30, -1)
            cv2.line(img, (ex - int(10 * s), ey - int(10 * s)), (ex + int(10 * s), ey - int(10 * s)),
                     40, max(1, int(3 * s)))
        cv2.ellipse(img, (cx, cy + int(8 * s)), (int(5 * s), int(10 * s)), 0, 0, 360, 150, -1)
        cv2.ellipse(img, (cx, cy + int(28 * s)), (int(14 * s * mouth), int(5 * s)), 0, 0, 360, 50, -1)
        img = cv2.GaussianBlur(img, (5, 5), 0)
    return np.stack([img, (img * 0.85).astype(np.uint8), (img * 0.7).astype(np.uint8)], axis=-1)


def tone(seconds: float, sr: int, freq: float = 220.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(N, channels) float32 tone + noise."""
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def write_wav(path: Path, seconds: float = 1.0, sr: int = 16000, channels: int = 1,
              freq: float = 220.0) -> Path:
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr, freq, channels), sr)
    return path


def write_empty_wav(path: Path, sr: int = 16000) -> Path:
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros((0, 1), np.float32), sr)
    return path


def write_garbage(path: Path, n: int = 2000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def write_video(path: Path, seconds: float = 1.0, fps: int = 10, face: bool = True,
                audio_sr: int | None = 22050, size: tuple[int, int] = (160, 120)) -> Path:
    """Encode a moving face (or no face) with PyAV; .flv -> FLV1 + AAC, else MPEG-4 + PCM."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    flv = path.suffix == ".flv"
    n = max(int(round(seconds * fps)), 1)
    with av.open(str(path), "w", format="flv" if flv else path.suffix[1:]) as out:
        vs = out.add_stream("flv" if flv else "mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        audio = out.add_stream("aac" if flv else "pcm_s16le", rate=audio_sr) if audio_sr else None
        if audio is not None:
            audio.layout = "mono"
        for i in range(n):
            frame = face_frame(size[1], size[0], cx=size[0] // 2 - 5 + i % 10, face=face, seed=i)
            for packet in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if audio is not None:
            _encode_audio(out, audio, tone(n / fps, audio_sr)[:, 0], audio_sr)
    return path


def _encode_audio(out, stream, x: np.ndarray, sr: int) -> None:
    import av
    size = stream.codec_context.frame_size or 1024
    planar = stream.codec_context.format.name == "fltp"
    for k in range(0, len(x), size):
        chunk = x[k:k + size][None]                                          # (1, n)
        frame = (av.AudioFrame.from_ndarray(chunk.astype(np.float32), format="fltp", layout="mono")
                 if planar else
                 av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16), format="s16", layout="mono"))
        frame.sample_rate, frame.pts = sr, k
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


# ----------------------------------------------------------------------------- CREMA-D


CREMA_SENTENCES = ("DFA", "IEO", "TIE")
RATES = (16000, 44100, 8000, 48000, 22050)


def make_cremad(root: Path, speakers: int = 6, per_speaker: int = 3, seconds: float = 0.8,
                fps: int = 10, broken: bool = True) -> dict:
    """AudioWAV/*.wav + VideoFlash/*.flv. Returns {"utts": [...], "broken": {utt: what}}."""
    utts, broken_cases = [], {}
    for s in range(speakers):
        for k in range(per_speaker):
            code = CREMA_CODES[(s + k) % len(CREMA_CODES)]
            utt = f"{1001 + s}_{CREMA_SENTENCES[k % 3]}_{code}_{'XX' if k else 'HI'}"
            sr, ch = RATES[(s + k) % len(RATES)], 2 if (s + k) % 3 == 0 else 1
            write_wav(root / "AudioWAV" / f"{utt}.wav", seconds, sr, ch, freq=200 + 40 * k)
            write_video(root / "VideoFlash" / f"{utt}.flv", seconds, fps)
            utts.append(utt)
    if broken:
        assert len(utts) >= 8, "the broken cases need at least 8 utterances"
        write_empty_wav(root / "AudioWAV" / f"{utts[1]}.wav")
        broken_cases[utts[1]] = "empty audio"
        write_garbage(root / "VideoFlash" / f"{utts[2]}.flv")
        broken_cases[utts[2]] = "unreadable video"
        write_video(root / "VideoFlash" / f"{utts[4]}.flv", seconds, fps, face=False)
        broken_cases[utts[4]] = "no face"
        (root / "VideoFlash" / f"{utts[5]}.flv").unlink()
        broken_cases[utts[5]] = "no video file"
        write_garbage(root / "AudioWAV" / f"{utts[7]}.wav")                  # audio and video bad
        write_video(root / "VideoFlash" / f"{utts[7]}.flv", seconds, fps, face=False)
        broken_cases[utts[7]] = "both bad"
    return {"utts": utts, "broken": broken_cases}


def write_cremad_partition(path: Path, utts: list[str], split_of_speaker: dict[str, str],
                           seed: int = 0) -> Path:
    """VAVL label_consensus_N.csv for `utts`; soft labels peak at the file-name emotion."""
    rng = np.random.default_rng(seed)
    lines = ["FileName,angry,sad,disgust,fear,neutral,happy,SpkrID,Gender,Split_Set"]
    for utt in utts:
        spk, _, code, _ = utt.split("_")
        soft = np.full(6, 0.01)
        soft[CREMA_CODES.index(code)] = 0.6
        soft[rng.integers(6)] += 0.2
        soft /= soft.sum()
        gender = "Female" if int(spk) % 2 else "Male"
        lines.append(f"{utt}.wav," + ",".join(f"{v:.3f}" for v in soft[:-1])
                     + f",{1 - sum(round(v, 3) for v in soft[:-1]):.3f},{spk},{gender},"
                     + split_of_speaker[spk])
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- MSP-IMPROV


def make_mspimprov(root: Path, sessions: int = 3, seconds: float = 0.8, fps: int = 10) -> dict:
    """Audio/session<N>/<S01A>/<R>/*.wav + Video/... *.avi and a labels_consensus file."""
    utts, lines = [], ["FileName,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"]
    split_of = {1: "Train", 2: "Development", 3: "Test"}
    rng = np.random.default_rng(0)
    for n in range(1, sessions + 1):
        for g in "FM":
            for k, (sent, scen) in enumerate((("S01A", "R"), ("S02H", "P"))):
                utt = f"MSP-IMPROV-{sent}-{g}{n:02d}-{scen}-FM{n:02d}"
                rel = Path(f"session{n}") / sent / scen
                write_wav(root / "Audio" / rel / f"{utt}.wav", seconds, 44100, 1, 180 + 30 * k)
                write_video(root / "Video" / rel / f"{utt}.avi", seconds, fps, audio_sr=None)
                a, v, d = rng.uniform(1, 5, 3)
                lines.append(f"{utt}.wav,{a:.6f},{v:.6f},{d:.6f},{n},"
                             f"{'Female' if g == 'F' else 'Male'},{split_of.get(n, 'Train')}")
                utts.append(utt)
    partition = root / "labels_consensus_1.csv"
    partition.write_text("\n".join(lines) + "\n")
    return {"utts": utts, "partition": partition}


# ----------------------------------------------------------------------------- IEMOCAP


IEMOCAP_EMOS = ("neu", "exc", "sad", "ang", "fru", "hap")


def make_iemocap(root: Path, sessions: int = 3, turns: int = 3, seconds: float = 0.8,
                 fps: int = 10) -> dict:
    """Session<n>/{dialog/EmoEvaluation/*.txt, sentences/wav/<dialog>/*.wav, dialog/avi/DivX/*.avi}."""
    utts, k = {}, 0
    for n in range(1, sessions + 1):
        s = root / f"Session{n}"
        dialog = f"Ses{n:02d}F_impro01"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        t = 0.3
        for i in range(turns):
            for g in "FM":
                utt = f"{dialog}_{g}{i:03d}"
                emo = IEMOCAP_EMOS[k % len(IEMOCAP_EMOS)]
                lines += [f"[{t:.4f} - {t + seconds:.4f}]\t{utt}\t{emo}\t[{2 + k % 3:.4f}, "
                          f"{3.5 - k % 2:.4f}, {2.5:.4f}]", f"C-E1:\t{emo};\t()", ""]
                write_wav(s / "sentences" / "wav" / dialog / f"{utt}.wav", seconds, 16000)
                utts[utt] = {"emotion": emo, "start": t, "end": t + seconds}
                t += seconds + 0.1
                k += 1
        (s / "dialog" / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (s / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        write_video(s / "dialog" / "avi" / "DivX" / f"{dialog}.avi", t + 0.2, fps, audio_sr=16000)
    return {"utts": utts}
