"""``mlflow server`` subprocesses with options the plain :class:`servers.MlflowServer` does not
take: MLflow's basic-auth app, or a backend store given from outside (a benchmark's big store).

A plain module (no pytest imports) like ``servers.py``, so benchmarks use it too.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from pathlib import Path

from servers import MlflowServer

#: The user MLflow's basic-auth app creates on its first start.
ADMIN = "admin"


class ConfiguredMlflowServer(MlflowServer):
    """A real ``mlflow server`` with extra command-line options and environment.

    Args:
        backend_uri: the backend store (default: a fresh sqlite file in the server's folder).
        basic_auth: run MLflow's ``basic-auth`` app (needs ``mlflow[auth]``); the admin user is
            :data:`ADMIN` with the password :attr:`admin_password`, and other users get READ.
    """

    def __init__(
        self,
        *,
        backend_uri: str | None = None,
        basic_auth: bool = False,
        startup_timeout: float = 90.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self._backend_uri = backend_uri
        self.basic_auth = basic_auth
        self.admin_password = "pw-" + secrets.token_hex(12)

    @property
    def backend_uri(self) -> str:
        return self._backend_uri or super().backend_uri

    def url_with(self, user: str, password: str) -> str:
        """The tracking URI with credentials in it."""
        return f"http://{user}:{password}@{self.host}:{self.port}"

    def _spawn(self, exe: Path) -> None:
        # servers.MlflowServer._spawn with two more options; keep the two in step.
        cmd = [
            str(exe),
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--default-artifact-root",
            str(self.artifact_root),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if self.enable_jobs else "false",
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(self._tmp()),
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.basic_auth:
            cmd += ["--app-name", "basic-auth"]
            config = self._tmp() / "basic_auth.ini"
            config.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = sqlite:///{self._tmp() / 'basic_auth.db'}\n"
                f"admin_username = {ADMIN}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
        with self.logfile.open("ab") as log:
            log.write(f"$ {shlex.join(cmd)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                cmd,
                cwd=self._tmp(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def create_user(self, user: str, password: str) -> None:
        """Add a user through the auth app's REST API, as the admin (READ on everything)."""
        import requests

        answer = requests.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            json={"username": user, "password": password},
            auth=(ADMIN, self.admin_password),
            timeout=30,
        )
        answer.raise_for_status()
