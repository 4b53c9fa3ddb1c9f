"""A small training job written the way MLflow + Optuna tutorials write them.

Each trial of ``study.optimize`` opens an MLflow run, stores the run id in the trial's user
attribute ``mlflow_run_id``, and logs a metric every epoch. Killing this process with SIGKILL or
SIGTERM leaves the run and the trial RUNNING, which is the problem mltidy exists for.

It prints ``ready <run_id> <trial_number>`` once the first metric is logged, so that the demo and
the tests know when to kill it. Options vary the tutorial for the tests: no MLflow at all, the
Optuna opt-ins (``track``, ask/tell with ``record``), a run id written only after training, a
job that goes quiet, a job that ends itself with ``os._exit``.

Run: ``python -m mltidy.demo.worker --mlflow URI --optuna URL --study NAME``
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from typing import Any

from mltidy import names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mltidy-demo-worker")
    parser.add_argument("--mlflow", default=None, help="MLflow tracking URI (omit: no MLflow)")
    parser.add_argument("--optuna", required=True, help="Optuna storage URL or journal file")
    parser.add_argument("--study", required=True)
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: study)")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument(
        "--run-name", default=None, help="MLflow run name (default: trial-N); {n} is the number"
    )
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="an MLflow run tag"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--epoch-seconds", type=float, default=0.2)
    parser.add_argument("--heartbeat", type=int, default=None, help="RDBStorage heartbeat (s)")
    parser.add_argument(
        "--provenance",
        choices=["none", "track", "record"],
        default="none",
        help="Optuna opt-in: decorate the objective, or ask/tell with record(trial)",
    )
    parser.add_argument(
        "--link",
        choices=["early", "late"],
        default="early",
        help="set the trial's mlflow_run_id before training (early) or after it (late)",
    )
    parser.add_argument("--quiet", action="store_true", help="log only the first metric")
    parser.add_argument(
        "--ready-after",
        type=int,
        default=1,
        help="print the ready line after this many epochs (metrics) instead of the first",
    )
    parser.add_argument(
        "--empty", action="store_true", help="log nothing at all (a job killed while loading data)"
    )
    parser.add_argument(
        "--exit-after-ready", type=int, default=None, help="os._exit(CODE) after the first epoch"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``--trials`` Optuna trials, each training inside an MLflow run (unless no MLflow)."""
    args = _parser().parse_args(argv)
    # Ctrl-C (SIGINT) is how the demo and the tests stop a job politely. A job started from a
    # background shell (`cmd &`, cron, CI) inherits SIGINT as ignored; take the default back.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    import optuna

    from mltidy.demo.jobs import optuna_storage
    from mltidy.provenance import record, track

    mlflow: Any = None
    if args.mlflow:
        import mlflow

        mlflow.set_tracking_uri(args.mlflow)
        mlflow.set_experiment(args.experiment or args.study)
    storage = optuna_storage(args.optuna, heartbeat_interval=args.heartbeat)
    study = optuna.create_study(study_name=args.study, storage=storage, load_if_exists=True)

    def train(trial: optuna.Trial, run_id: str | None) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        layers = trial.suggest_int("layers", 1, 4)
        if args.empty:
            print(f"ready {run_id or '-'} {trial.number}", flush=True)
            time.sleep(args.epochs * args.epoch_seconds)
            return 1.0
        if mlflow is not None:
            mlflow.log_params({"lr": lr, "layers": layers})
        loss = 1.0
        for epoch in range(args.epochs):
            loss = math.exp(-lr * 10 * (epoch + 1)) + 0.05 * layers
            if mlflow is not None and (epoch == 0 or not args.quiet):
                mlflow.log_metric("loss", loss, step=epoch)
            if epoch == min(max(args.ready_after, 1), args.epochs) - 1:
                print(f"ready {run_id or '-'} {trial.number}", flush=True)
                if args.exit_after_ready is not None:
                    os._exit(args.exit_after_ready)
            time.sleep(args.epoch_seconds)
        return loss

    def objective(trial: optuna.Trial) -> float:
        if mlflow is None:
            return train(trial, None)
        name = (args.run_name or "trial-{n}").replace("{n}", str(trial.number))
        tags = dict(item.split("=", 1) for item in args.tag)
        with mlflow.start_run(run_name=name, tags=tags or None) as run:
            if args.link == "early":
                trial.set_user_attr(names.MLFLOW_RUN_ID, run.info.run_id)
            loss = train(trial, run.info.run_id)
            if args.link == "late":
                trial.set_user_attr(names.MLFLOW_RUN_ID, run.info.run_id)
            return loss

    if args.provenance == "record":
        for _ in range(args.trials):
            trial = study.ask()
            record(trial)
            study.tell(trial, objective(trial))
    elif args.provenance == "track":
        study.optimize(track(objective), n_trials=args.trials)
    else:
        study.optimize(objective, n_trials=args.trials)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
