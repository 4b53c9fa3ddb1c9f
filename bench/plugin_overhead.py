"""What mltidy's MLflow plugin adds to ``mlflow.start_run``, against MLflow without it.

Same process, same store, interleaved: N runs with the plugin (MLTIDY_PROVENANCE=1) and N
without (MLTIDY_PROVENANCE=0), inside an Optuna objective so that the trial detection runs too.
Also times the provider's ``tags()`` call alone, which is the plugin's own cost.

Run: python bench/plugin_overhead.py [N]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    import logging

    import mlflow
    import optuna

    from mltidy.provenance.mlflow_plugin import MltidyRunContextProvider

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        mlflow.set_experiment("bench")
        with_plugin: list[float] = []
        without: list[float] = []
        provider_only: list[float] = []
        provider = MltidyRunContextProvider()

        def objective(trial: optuna.Trial) -> float:
            for flag, sink in (("1", with_plugin), ("0", without)):
                os.environ["MLTIDY_PROVENANCE"] = flag
                start = time.perf_counter()
                mlflow.start_run()
                sink.append(time.perf_counter() - start)
                mlflow.end_run()
            start = time.perf_counter()
            provider.tags()
            provider_only.append(time.perf_counter() - start)
            return 0.0

        study = optuna.create_study()
        study.optimize(objective, n_trials=rounds)
    a, b = statistics.median(with_plugin), statistics.median(without)
    p = statistics.median(provider_only)
    print(f"rounds: {rounds}")
    print(f"start_run with plugin    median {a * 1000:8.2f} ms")
    print(f"start_run without plugin median {b * 1000:8.2f} ms")
    print(f"difference               median {(a - b) * 1000:8.2f} ms  (ratio {a / b:.3f})")
    print(f"provider.tags() alone    median {p * 1000:8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
