"""Pooled-statistics linear baselines ("probes"), torch-free (numpy, scikit-learn).

For each utterance and stream: the mean and the standard deviation of every feature dimension
over its frames (features z-scored with the training split's statistics, study/data/normalize.py),
standardised again with the training utterances' pooled statistics. Three linear models on them:
audio, video and their concatenation (AV). Categorical tasks: multinomial logistic regression
on the hard labels; dimensional: ridge regression on the z-scored targets. The regularisation
(C, or alpha) is chosen per probe on dev (audio on `audio_only`, video on `video_only`, AV on
`av`), from a fixed grid; ties go to the stronger regularisation.

Training data follow the protocol's training availability (train_missing_rate), as the models'
do: the AV probe fits the paired training utterances, each single-stream probe every training
utterance that kept the stream. Evaluation follows the models' conditions exactly
(study/data/protocol.py): under `miss_*` and `*_only` an utterance that lost a stream is
predicted by the single-stream probe of the stream it kept; under a frame-level condition the
pooled statistics are taken over the kept (perturbed) frames only. Rows carry the same metric
columns and sanity flags as a trial's (study/training/metrics.py, sanity.py).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass

import numpy as np

from study.data.dataset import MODALITIES, Dataset
from study.data.normalize import FeatureStats, load_stats
from study.data.protocol import (
    Condition,
    ProtocolConfig,
    area_families,
    condition_availability,
    condition_perturbation,
    eval_conditions,
    perturb_frames,
    robustness,
    robustness_name,
    train_availability,
)
from study.training.metrics import categorical_metrics, dimensional_metrics
from study.training.sanity import nan_metrics, row_flag

POOLING = "mean+std"
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)      # logistic regression, weakest last
ALPHA_GRID = (1000.0, 300.0, 100.0, 30.0, 10.0, 1.0)  # ridge, strongest first
PROBES = ("audio", "video", "av")
PROBE_CONDITION = {"audio": "audio_only", "video": "video_only", "av": "av"}
DEFAULT_HZ = {"audio": 50.0, "video": 30.0}


@dataclass(frozen=True)
class ProbeSetup:
    """What a probe run needs besides the dataset."""
    task: str = "categorical"           # or "dimensional"
    label_kind: str = "hard"            # soft labels: the probe still fits their argmax
    protocol: ProtocolConfig = ProtocolConfig()
    extended: bool = True               # evaluate the frame-level families too


# ----------------------------------------------------------------------------- pooling


def pool(x: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """(T, D) frames (rows with keep False ignored) -> (2D,) [mean, std], float64."""
    x = np.asarray(x, np.float64)
    if keep is not None:
        x = x[keep]
    return np.concatenate([x.mean(0), x.std(0)])


class Streams:
    """Pooled statistics of one split's streams, clean or under a frame-level perturbation."""

    def __init__(self, ds: Dataset, frame, norm: FeatureStats):
        self.ds, self.frame, self.norm = ds, frame, norm
        self.utts = frame["utt_id"].astype(str).to_numpy()
        self.native = {m: frame[f"has_{m}"].to_numpy(bool) for m in MODALITIES}
        self._clean = {m: self._pooled(m, None) for m in MODALITIES}

    def _pooled(self, modality: str, perturb) -> np.ndarray:
        """(N, 2D) pooled features; NaN rows for utterances without the stream."""
        stats = self.norm[modality]
        dim = int(self.ds.meta[modality]["dim"])
        out = np.full((len(self.utts), 2 * dim), np.nan)
        rate = self.ds.meta[modality].get("rate_hz") or DEFAULT_HZ[modality]
        scale = (stats.std / stats.scale).astype(np.float32)  # noise scale of z-scored features
        for i, (utt, has) in enumerate(zip(self.utts, self.native[modality])):
            if not has:
                continue
            x = stats.apply(self.ds.features[modality].get(utt))          # (T, D) z-scores
            keep = None
            if perturb is not None and not getattr(perturb, modality).identity:
                x, keep = perturb_frames(x, utt, modality, perturb, rate, scale)
            out[i] = pool(x, keep)
        return out

    def features(self, perturb=None) -> dict[str, np.ndarray]:
        """{audio, video: (N, 2D)} pooled features under `perturb` (None: clean)."""
        if perturb is None or perturb.identity:
            return self._clean
        return {m: self._clean[m] if getattr(perturb, m).identity else self._pooled(m, perturb)
                for m in MODALITIES}


def probe_input(feats: dict[str, np.ndarray], probe: str) -> np.ndarray:
    """(N, F) input of one probe: a stream's pooled features, or both concatenated."""
    if probe == "av":
        return np.concatenate([feats["audio"], feats["video"]], 1)
    return feats[probe]


# ----------------------------------------------------------------------------- fitting


@dataclass
class Probe:
    """One fitted linear probe: input standardisation (training statistics) and the model."""
    name: str
    mu: np.ndarray
    sd: np.ndarray
    model: object
    reg: float                 # C (categorical) or alpha (dimensional)
    n_outputs: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, F) -> (N, K): log class probabilities (categorical) or values (dimensional)."""
        z = (x - self.mu) / self.sd
        if not hasattr(self.model, "predict_log_proba"):
            return self.model.predict(z).reshape(len(z), -1)
        out = np.full((len(z), self.n_outputs), np.log(1e-12))
        out[:, self.model.classes_] = self.model.predict_log_proba(z)
        return out


def _estimator(task: str, reg: float):
    if task == "categorical":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=reg, max_iter=300)
    from sklearn.linear_model import Ridge

    return Ridge(alpha=reg)


def fit_probe(name: str, x: np.ndarray, y: np.ndarray, x_dev: np.ndarray, dev_score,
              task: str, n_outputs: int) -> Probe:
    """Fit over the grid; keep the dev-best (dev_score(pred) -> float, higher is better)."""
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    best = None
    grid = C_GRID if task == "categorical" else ALPHA_GRID
    for reg in grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs convergence at the weakest C is harmless
            model = _estimator(task, reg).fit((x - mu) / sd, y)
        probe = Probe(name, mu, sd, model, reg, n_outputs)
        score = dev_score(probe.predict(x_dev))
        if best is None or score > best[0] + 1e-12:
            best = (score, probe)
    return best[1]


# ----------------------------------------------------------------------------- targets, metrics


def split_targets(ds: Dataset, frame, setup: ProbeSetup, train) -> tuple[np.ndarray, np.ndarray]:
    """(target (N, K), label (N,)) as the loader builds them (study/training/loader.py)."""
    n = len(frame)
    if setup.task == "dimensional":
        cols = [(frame[d].to_numpy(float) - train[d].mean()) / (train[d].std() or 1.0)
                for d in ds.dimensions]
        return np.stack(cols, 1), np.full(n, -1, np.int64)
    label = frame["label"].map({c: i for i, c in enumerate(ds.classes)}).to_numpy(np.int64)
    soft = ds.soft_columns()
    if setup.label_kind == "soft" and soft:
        t = frame[soft].to_numpy(np.float64)
        return t / t.sum(1, keepdims=True), label
    return np.eye(len(ds.classes))[label], label


def row_metrics(pred: np.ndarray, target: np.ndarray, label: np.ndarray, ds: Dataset,
                task: str) -> dict:
    """Every metric of one condition's predictions and its sanity flag (as Session._metrics)."""
    if task == "categorical":
        logp = pred - np.logaddexp.reduce(pred, axis=1, keepdims=True)  # log_softmax
        loss = float(-(target * logp).sum(1).mean()) if len(pred) else float("nan")
        metrics = {"loss": loss, **categorical_metrics(label, pred.argmax(1), ds.classes)}
    else:
        metrics = dimensional_metrics(pred, target, ds.dimensions)
        metrics = {"loss": 1.0 - metrics["ccc_mean"], **metrics}
    flag = row_flag(pred, task, metrics, label, len(ds.classes))
    return {**(nan_metrics(metrics) if flag == "nan" else metrics), "flag": flag}


def _primary(task: str) -> str:
    return "macro_f1" if task == "categorical" else "ccc_mean"


# ----------------------------------------------------------------------------- the run


@dataclass
class ProbeResult:
    probes: dict[str, Probe]
    rows: dict[str, list[dict]]        # split -> rows (one per condition, plus area rows)
    unpaired_share: float              # training utterances with one stream
    seconds: float

    def config(self) -> dict:
        """The chosen regularisation per probe and the pooling (results' `config` JSON)."""
        categorical = hasattr(self.probes["av"].model, "predict_log_proba")
        return {"baseline": "probe", "pooling": POOLING, "normalize": True,
                "reg_name": "C" if categorical else "alpha",
                "reg": {p: pr.reg for p, pr in self.probes.items()},
                "grid": list(C_GRID if categorical else ALPHA_GRID)}


def run_probes(ds: Dataset, setup: ProbeSetup, splits=("dev", "test")) -> ProbeResult:
    """Fit the three probes on train (dev-chosen regularisation), evaluate every condition."""
    start = time.perf_counter()
    norm = load_stats(ds, "train")
    train_frame = ds.split("train")
    data = {s: Streams(ds, ds.split(s), norm) for s in ("train", "dev", "test")}
    targets = {s: split_targets(ds, data[s].frame, setup, train_frame) for s in data}
    tr = data["train"]
    has_a, has_v = train_availability(tr.utts, tr.native["audio"], tr.native["video"], setup.protocol)
    train_has = {"audio": has_a, "video": has_v, "av": has_a & has_v}
    dev_has = {"audio": data["dev"].native["audio"], "video": data["dev"].native["video"]}
    dev_has["av"] = dev_has["audio"] & dev_has["video"]
    k = len(ds.classes) if setup.task == "categorical" else len(ds.dimensions)
    probes = {}
    for p in PROBES:
        probes[p] = _fit_one(p, ds, setup, data, targets, train_has[p], dev_has[p], k)
    rows = {s: evaluate_probes(ds, probes, data[s], targets[s], setup) for s in splits}
    return ProbeResult(probes, rows, float(np.mean(has_a != has_v)), time.perf_counter() - start)


def _fit_one(p, ds, setup, data, targets, train_keep, dev_keep, k) -> Probe:
    if not train_keep.any() or not dev_keep.any():
        raise ValueError(f"{ds.root}/manifest.parquet: no training or dev utterance for the "
                         f"{p} probe (streams missing under the training protocol)")
    x = probe_input(data["train"].features(), p)[train_keep]
    t, lab = targets["train"]
    y = lab[train_keep] if setup.task == "categorical" else t[train_keep]
    x_dev = probe_input(data["dev"].features(), p)[dev_keep]
    t_dev, lab_dev = targets["dev"]
    primary = _primary(setup.task)

    def dev_score(pred):
        return row_metrics(pred, t_dev[dev_keep], lab_dev[dev_keep], ds, setup.task)[primary]

    return fit_probe(p, x, y, x_dev, dev_score, setup.task, k)


def evaluate_probes(ds: Dataset, probes: dict[str, Probe], data: Streams, target_label,
                    setup: ProbeSetup) -> list[dict]:
    """One row per evaluation condition (the models' plan) plus each family's area row."""
    target, label = target_label
    plan = eval_conditions(setup.protocol, extended=setup.extended)
    cache: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    for cond in plan:
        keep, a, v = condition_availability(cond, data.utts, data.native["audio"],
                                            data.native["video"], setup.protocol)
        pred = _condition_pred(cond, probes, data, a, v, setup, cache)
        metrics = row_metrics(pred[keep], target[keep], label[keep], ds, setup.task)
        rows.append({"condition": cond.name, "family": cond.family, "level": cond.level,
                     "test_missing_rate": cond.test_missing_rate, "n": int(keep.sum()), **metrics})
    for family in area_families(plan):
        rows.append(area_row(rows, family))
    return rows


def _condition_pred(cond: Condition, probes, data: Streams, a, v, setup, cache) -> np.ndarray:
    """(N, K): per utterance the AV probe when both streams remain, else the single-stream
    probe of the one it kept (rows of utterances with no stream are 0)."""
    perturb = condition_perturbation(cond, setup.protocol)
    key = "clean" if perturb is None or perturb.identity else cond.name
    if key not in cache:
        cache[key] = data.features(perturb)
    feats = cache[key]
    k = probes["av"].n_outputs
    out = np.zeros((len(data.utts), k))
    for probe, rows in (("audio", a & ~v), ("video", v & ~a), ("av", a & v)):
        if rows.any():
            out[rows] = probes[probe].predict(probe_input(feats, probe)[rows])
    return out


def area_row(rows: list[dict], family: str) -> dict:
    """Normalised area under every scalar metric vs the family's level (Session's area rows)."""
    curve = [r for r in rows if r.get("family") == family and r.get("level") is not None]
    skip = {"level", "test_missing_rate", "n"}
    keys = [k for k, v in curve[0].items() if isinstance(v, float) and k not in skip] if curve else []
    levels = [r["level"] for r in curve]
    out = {"condition": robustness_name(family), "family": family, "level": None,
           "test_missing_rate": None, "n": curve[0]["n"] if curve else 0, "flag": None}
    out.update({k: robustness(levels, [r[k] for r in curve]) for k in keys})
    return out


def summary(result: ProbeResult, split: str = "test", task: str = "categorical") -> dict:
    """{av, audio_only, video_only: primary metric} of one split (for logs and benchmarks)."""
    by = {r["condition"]: r for r in result.rows[split]}
    return {c: float(by[c][_primary(task)]) for c in ("av", "audio_only", "video_only")}


def config_json(result: ProbeResult, protocol: ProtocolConfig) -> str:
    return json.dumps({**result.config(), "train_missing_rate": protocol.train_missing_rate,
                       "audio_only_share": protocol.audio_only_share}, sort_keys=True)
