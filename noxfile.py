"""Developer sessions: ``nox -s tests lint typecheck docs``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (starts real PostgreSQL and mlflow servers)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "bench", "docs", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "docs", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, CLI included."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Check that docs/cli.md matches the CLI's --help (regenerate with: nox -s docs -- --write)."""
    session.install("-e", ".")
    session.run("python", "docs/gen_cli_reference.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not tests): mltidy scan against what users would run instead, on generated
    stores of up to 1,000,000 runs cached outside the repository; rewrites docs/performance.md.

    ``nox -s bench -- --quick`` for a one-round smoke run; other options: ``--help``.
    """
    session.install("-e", ".[test]")
    args = session.posargs or ["--write", "docs/performance.md"]
    session.run("python", "bench/scan_speed.py", *args)
