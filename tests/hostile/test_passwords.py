"""A real PostgreSQL role whose password holds a raw ``@``, ``/``, a space and ``%``.

Typed into a URI as it is (the way people do), the password must reach the server as meant
(mltidy splits credentials at the last ``@`` and percent-encodes them for the driver), and no
part of it may appear in anything mltidy prints, whether the login works or not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from killed_jobs import KilledJobs
from servers import PostgresServer

EXE = Path(sys.executable).parent / "mltidy"
ROLE = "hostile_reader"
PASSWORD = "Zq7@Xv9/Kp3 Lm5%Wn2"
PIECES = ("Zq7", "Xv9", "Kp3", "Lm5", "Wn2")


def _grant(server: PostgresServer, world_url: str) -> None:
    server._admin_sql(f"DROP ROLE IF EXISTS {ROLE}")
    server._admin_sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    database = sa.make_url(world_url).database
    server._admin_sql(f'GRANT CONNECT ON DATABASE "{database}" TO {ROLE}')
    engine = sa.create_engine(world_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}"))
    finally:
        engine.dispose()


def _mltidy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_a_password_with_raw_reserved_characters(
    postgres_server: PostgresServer, postgres_world: KilledJobs, tmp_path: Path
) -> None:
    _grant(postgres_server, postgres_world.mlflow_uri)
    world = sa.make_url(postgres_world.mlflow_uri)
    raw = f"postgresql+psycopg2://{ROLE}:{PASSWORD}@{world.host}:{world.port}/{world.database}"

    scanned = _mltidy("scan", "-f", "json", "--mlflow", raw, cwd=tmp_path)
    assert scanned.returncode == 0, scanned.stderr
    payload = json.loads(scanned.stdout)
    assert payload["stores"][0]["ok"] and payload["records"]
    assert payload["stores"][0]["uri"] == (
        f"postgresql://{ROLE}@{world.host}:{world.port}/{world.database}"
    )

    for args in (("scan",), ("doctor",), ("close",)):
        done = _mltidy(*args, "--mlflow", raw, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        for piece in PIECES:
            assert piece not in done.stdout + done.stderr, (args, piece)

    wrong = raw.replace("Wn2@", "Wn3@")
    refused = _mltidy("scan", "--mlflow", wrong, cwd=tmp_path)
    assert refused.returncode == 3
    assert "access denied" in refused.stderr or "authentication" in refused.stderr
    for piece in PIECES:
        assert piece not in refused.stdout + refused.stderr, piece
