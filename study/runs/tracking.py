"""Opt-in experiment tracking: the spec's `tracking:` section -> Ray Tune's own logger callbacks.

    tracking:
      mlflow: {tracking_uri: "sqlite:///mlflow.db", experiment_name: my-study}   # or http(s)://, file:
      wandb: {project: avstudy, group: demo, mode: offline}                     # where wandb is installed

Every trial becomes one MLflow run / W&B run with its config as parameters and each epoch's
report as metrics. TensorBoard needs nothing: Tune writes event files under STUDY_DIR/ray.
"""

from __future__ import annotations

from study.runs.spec import StudySpec


def tracking_callbacks(spec: StudySpec, experiment: str) -> list:
    """Tune callbacks for the trackers the spec asks for (none by default)."""
    out = []
    mlflow = spec.tracking.get("mlflow")
    if mlflow is not None:
        try:
            import mlflow as _
            from ray.air.integrations.mlflow import MLflowLoggerCallback
        except ImportError as exc:
            raise ImportError("tracking.mlflow needs mlflow: pip install 'avstudy[tracking]'") from exc
        out.append(MLflowLoggerCallback(
            tracking_uri=mlflow.get("tracking_uri"),
            experiment_name=mlflow.get("experiment_name", spec.name),
            tags={"avstudy_study": spec.name, "avstudy_experiment": experiment, **mlflow.get("tags", {})},
            save_artifact=mlflow.get("save_artifact", False)))
    wandb = spec.tracking.get("wandb")
    if wandb is not None:
        try:
            import wandb as _  # noqa: F401
            from ray.air.integrations.wandb import WandbLoggerCallback
        except ImportError as exc:
            raise ImportError("tracking.wandb needs wandb: pip install wandb") from exc
        extra = {k: wandb[k] for k in ("entity", "mode", "tags") if k in wandb}  # -> wandb.init
        out.append(WandbLoggerCallback(project=wandb.get("project", "avstudy"),
                                       group=wandb.get("group", f"{spec.name}/{experiment}"),
                                       log_config=True, **extra))
    return out
