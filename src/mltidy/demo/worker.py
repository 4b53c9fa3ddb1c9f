"""A small training job written the way MLflow + Optuna tutorials write them.

Each trial of ``study.optimize`` opens an MLflow run, stores the run id in the trial's user
attribute ``mlflow_run_id``, and logs a metric every epoch. Killing this process with SIGKILL or
SIGTERM leaves the run and the trial RUNNING, which is the problem mltidy exists for.

It prints ``ready <run_id> <trial_number>`` once the first metric is logged, so that the demo and
the tests know when to kill it.

Run: ``python -m mltidy.demo.worker --mlflow URI --optuna URL --study NAME``
"""

from __future__ import annotations

import argparse
import math
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Run one Optuna trial (or ``--trials N``) with an MLflow run inside each."""
    parser = argparse.ArgumentParser(prog="mltidy-demo-worker")
    parser.add_argument("--mlflow", required=True, help="MLflow tracking URI")
    parser.add_argument("--optuna", required=True, help="Optuna storage URL or journal file")
    parser.add_argument("--study", required=True)
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: study)")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--epoch-seconds", type=float, default=0.2)
    parser.add_argument(
        "--heartbeat", type=int, default=None, help="RDBStorage heartbeat interval (seconds)"
    )
    args = parser.parse_args(argv)

    import mlflow
    import optuna

    from mltidy.demo.jobs import optuna_storage

    mlflow.set_tracking_uri(args.mlflow)
    mlflow.set_experiment(args.experiment or args.study)
    storage = optuna_storage(args.optuna, heartbeat_interval=args.heartbeat)
    study = optuna.create_study(study_name=args.study, storage=storage, load_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        layers = trial.suggest_int("layers", 1, 4)
        with mlflow.start_run(run_name=f"trial-{trial.number}") as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            mlflow.log_params({"lr": lr, "layers": layers})
            loss = 1.0
            for epoch in range(args.epochs):
                loss = math.exp(-lr * 10 * (epoch + 1)) + 0.05 * layers
                mlflow.log_metric("loss", loss, step=epoch)
                if epoch == 0:
                    print(f"ready {run.info.run_id} {trial.number}", flush=True)
                time.sleep(args.epoch_seconds)
            return loss

    study.optimize(objective, n_trials=args.trials)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
