"""MLflow tracking stores: SQL fast path, MlflowClient paths, REST."""
