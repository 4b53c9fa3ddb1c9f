"""A training job as tutorials write it, for an environment without mltidy.

Each Optuna trial trains inside an MLflow run, stores the run id in the trial's user attribute
``mlflow_run_id`` first thing (as the tutorials do), and logs a metric every epoch. Nothing here
imports mltidy: the tests run it with a Python that does not have it.

It prints ``ready <run_id> <trial_number> <pid>`` after ``--ready-after`` metrics, so that a test
knows when to kill it, and ``done`` when every trial is over.

Options: ``--pauses 2,2,6`` sleeps that long after each epoch in turn (the last one repeats);
``--no-mlflow`` trains without MLflow (the trial is all there is).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mlflow", default=None)
    parser.add_argument("--optuna", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--experiment", default=None)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--pauses", default="2")
    parser.add_argument("--ready-after", type=int, default=1)
    args = parser.parse_args()
    pauses = [float(p) for p in args.pauses.split(",")]

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mlflow = None
    if args.mlflow:
        import mlflow

        mlflow.set_tracking_uri(args.mlflow)
        mlflow.set_experiment(args.experiment or args.study)

    def train(trial: optuna.Trial, run_id: str) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        loss = 1.0
        for epoch in range(args.epochs):
            loss = math.exp(-lr * 10 * (epoch + 1))
            if mlflow is not None:
                mlflow.log_metric("loss", loss, step=epoch)
            trial.report(loss, epoch)
            if epoch + 1 == args.ready_after:
                print(f"ready {run_id} {trial.number} {os.getpid()}", flush=True)
            time.sleep(pauses[min(epoch, len(pauses) - 1)])
        return loss

    def objective(trial: optuna.Trial) -> float:
        if mlflow is None:
            return train(trial, "-")
        with mlflow.start_run(run_name=f"trial-{trial.number}") as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            return train(trial, run.info.run_id)

    study = optuna.create_study(study_name=args.study, storage=args.optuna, load_if_exists=True)
    study.optimize(objective, n_trials=args.trials)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
