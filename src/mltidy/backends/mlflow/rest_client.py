"""HTTP for MLflow's REST API: one kept-alive session, MLflow's auth and TLS variables, bounded
timeouts, and every failure translated into mltidy's errors at this boundary.

The settings are MLflow's own, read the way MLflow's client reads them, so that a server
reachable with ``MlflowClient`` is reachable here with the same environment:

* credentials in the URI (``https://user:password@host``) first, as requests does for MLflow;
  then ``MLFLOW_TRACKING_USERNAME`` with ``MLFLOW_TRACKING_PASSWORD`` (HTTP basic); then
  ``MLFLOW_TRACKING_TOKEN`` (bearer);
* ``MLFLOW_TRACKING_INSECURE_TLS`` (``true``/``false``/``1``/``0``),
  ``MLFLOW_TRACKING_SERVER_CERT_PATH`` (a CA bundle), ``MLFLOW_TRACKING_CLIENT_CERT_PATH``;
* ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (the read timeout; mltidy's default is 15 s, MLflow's 120 s)
  and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (``0`` turns the one retry off; more than one retry is
  never made, so a dead server fails a scan in seconds);
* ``MLFLOW_WORKSPACE`` (the ``X-MLFLOW-WORKSPACE`` header of MLflow 3 workspace servers).

Nothing here imports mlflow; ``requests`` is imported when a client is opened, not when this
module is imported. Text a server sends (error messages) reaches mltidy's messages only through
:func:`server_text`.

Size: one boundary: every HTTP detail (session, auth, TLS, paging, timeouts, error translation) in
one place, so the REST backend above it speaks only MLflow's endpoints.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from mltidy import __version__, names
from mltidy.errors import NotAStore, StoreAccessDenied, StoreError, StoreUnreachable
from mltidy.model import StoreId
from mltidy.redact import redact, register_secret, split_credentials
from mltidy.text import safe

if TYPE_CHECKING:
    import requests

#: Where MLflow's tracking API lives under the tracking URI.
API = "/api/2.0/mlflow/"
#: Where MLflow's UI endpoints live (``metrics/get-history-bulk``: not part of the documented
#: API, so callers fall back when a server does not have it).
AJAX_API = "/ajax-api/2.0/mlflow/"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
#: The pause before the one retry of a request that could not connect or met a busy gateway.
RETRY_PAUSE = 0.25
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Answers of a web server that has no such API (not found, method not allowed, not implemented).
NOT_AN_API = frozenset({404, 405, 501})
TEXT_LIMIT = 300
ACCESS_HINT = (
    f"set {names.MLFLOW_TRACKING_USERNAME_ENV} and {names.MLFLOW_TRACKING_PASSWORD_ENV}, or "
    f"{names.MLFLOW_TRACKING_TOKEN_ENV} (or put user:password@ in the URI)"
)
TLS_HINT = (
    f"point {names.MLFLOW_TRACKING_SERVER_CERT_PATH_ENV} at the server's CA bundle, or set "
    f"{names.MLFLOW_TRACKING_INSECURE_TLS_ENV}=true to skip verification"
)

Authorize = Callable[["requests.PreparedRequest"], "requests.PreparedRequest"]


def server_text(raw: object) -> str:
    """Text a server sent, made fit for one line of mltidy's output: whitespace folded, cut to
    :data:`TEXT_LIMIT` characters, secrets masked, controls and bidi characters shown as escapes
    (:func:`mltidy.text.safe`). Every piece of server-supplied text that reaches a message goes
    through here."""
    text = " ".join(str(raw).split())
    if len(text) > TEXT_LIMIT:
        text = text[: TEXT_LIMIT - 3] + "..."
    return safe(redact(text), limit=None)


class MlflowApiError(StoreError):
    """The server answered with one of MLflow's own errors (``{"error_code", "message"}``).

    Attributes:
        error_code: MLflow's error code (``INVALID_PARAMETER_VALUE``, ...).
        status: the HTTP status.
        detail: the server's message, through :func:`server_text`.
    """

    def __init__(self, message: str, *, error_code: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class HttpSettings:
    """How to reach one tracking server; computed from the URI and the environment, no I/O.

    ``authorization`` is the ``Authorization`` header value (secret: never printed).
    """

    base_url: str
    authorization: str | None
    verify: bool | str
    cert: str | None
    connect_timeout: float
    read_timeout: float
    retries: int
    workspace: str | None

    @classmethod
    def from_env(
        cls, uri: str, store: StoreId, environ: Mapping[str, str] | None = None
    ) -> HttpSettings:
        """Settings for ``uri`` under ``environ`` (default: this process's environment).

        Raises:
            StoreError: the URI is not http(s), or an MLflow variable holds a value MLflow
                itself would refuse.
        """
        env = os.environ if environ is None else environ
        parts = split_credentials(uri.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http://", "https://"):
            raise StoreError(f"{store} is not an http(s) tracking server URI")
        rest = parts.rest.split("#", 1)[0].split("?", 1)[0].rstrip("/")
        if not rest:
            raise StoreError(f"{store} names no host")
        authorization = None
        env_user = env.get(names.MLFLOW_TRACKING_USERNAME_ENV, "")
        env_password = env.get(names.MLFLOW_TRACKING_PASSWORD_ENV, "")
        token = env.get(names.MLFLOW_TRACKING_TOKEN_ENV, "")
        for secret in (env_password, token, parts.password or ""):
            register_secret(secret)
        if parts.user or parts.password:
            authorization = _basic(unquote(parts.user or ""), unquote(parts.password or ""))
        elif env_user and env_password:
            authorization = _basic(env_user, env_password)
        elif token:
            authorization = f"Bearer {token}"
        insecure = _env_bool(env, names.MLFLOW_TRACKING_INSECURE_TLS_ENV, store)
        server_cert = env.get(names.MLFLOW_TRACKING_SERVER_CERT_PATH_ENV) or None
        if insecure and server_cert:
            raise StoreError(
                f"{names.MLFLOW_TRACKING_INSECURE_TLS_ENV} and "
                f"{names.MLFLOW_TRACKING_SERVER_CERT_PATH_ENV} are both set",
                hint="set one of them: MLflow refuses the pair too",
            )
        verify: bool | str = server_cert if server_cert else not insecure
        retries = _env_number(env, names.MLFLOW_HTTP_MAX_RETRIES_ENV, 1.0, store)
        return cls(
            base_url=scheme + rest,
            authorization=authorization,
            verify=verify,
            cert=env.get(names.MLFLOW_TRACKING_CLIENT_CERT_PATH_ENV) or None,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=_env_number(env, names.MLFLOW_HTTP_TIMEOUT_ENV, READ_TIMEOUT, store),
            retries=min(1, int(retries)),
            workspace=(env.get(names.MLFLOW_WORKSPACE_ENV) or "").strip() or None,
        )


def _basic(user: str, password: str) -> str:
    """An HTTP basic header, UTF-8 as MLflow builds it (requests would use Latin-1)."""
    pair = f"{user}:{password}".encode()
    return "Basic " + base64.standard_b64encode(pair).decode("ascii")


def _env_bool(env: Mapping[str, str], key: str, store: StoreId) -> bool:
    value = env.get(key, "").strip().lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise StoreError(
        f"{store}: {key}={server_text(value)} is not true, false, 1 or 0",
        hint="MLflow accepts only these values",
    )


def _env_number(env: Mapping[str, str], key: str, default: float, store: StoreId) -> float:
    value = env.get(key, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        raise StoreError(f"{store}: {key}={server_text(value)} is not a number of seconds or tries")
    return number


class RestClient:
    """One tracking server's REST API over one kept-alive ``requests.Session``.

    Opening imports requests and builds the session; no request is sent until :meth:`call`.
    """

    def __init__(self, uri: str, store: StoreId, environ: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.settings = HttpSettings.from_env(uri, store, environ)
        import requests

        self._requests = requests
        session = requests.Session()
        session.headers.update(
            {"User-Agent": f"mltidy/{__version__} ({session.headers['User-Agent']})"}
        )
        session.headers["Accept"] = "application/json"
        if self.settings.workspace:
            session.headers["X-MLFLOW-WORKSPACE"] = self.settings.workspace
        if self.settings.authorization:
            # As an auth callable, not a default header: requests then skips ~/.netrc, and drops
            # the header when a redirect leaves the host.
            session.auth = _authorize(self.settings.authorization)
        self._session: requests.Session | None = session
        #: The ``Date`` header of the last answer: the server's clock (``doctor``).
        self.server_date: str | None = None

    def close(self) -> None:
        """Close the kept-alive connections. Safe to call twice."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def get(self, endpoint: str, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET`` an API endpoint (``runs/get``); the answer's JSON object (see :meth:`call`)."""
        return self._object(self.call("GET", endpoint, params=params))

    def post(self, endpoint: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST`` a JSON body to an API endpoint; the answer's JSON object (see :meth:`call`)."""
        return self._object(self.call("POST", endpoint, body=body))

    @staticmethod
    def _object(answer: dict[str, Any] | None) -> dict[str, Any]:
        assert answer is not None  # only a call with missing_ok answers None
        return answer

    def call(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        body: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
        prefix: str = API,
    ) -> dict[str, Any] | None:
        """Send one request (retried once when it could not connect or a gateway was busy).

        ``prefix`` is where the endpoint lives (:data:`API`, or :data:`AJAX_API`); a list in
        ``params`` is sent as a repeated parameter.

        Returns:
            The answer's JSON object, or ``None`` when ``missing_ok`` and MLflow answered
            ``RESOURCE_DOES_NOT_EXIST``.

        Raises:
            StoreUnreachable: no connection, no answer in time, or a gateway without a server.
            StoreAccessDenied: 401 or 403.
            NotAStore: the answer is not MLflow's (HTML, a web server without this API).
            MlflowApiError: MLflow refused the request with one of its error codes.
            StoreError: anything else (TLS verification, a server error page).
        """
        if self._session is None:
            raise StoreError(f"{self.store}: the connection was closed")
        exceptions = self._requests.exceptions
        url = self.settings.base_url + prefix + endpoint
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                # verify and cert per request: requests lets REQUESTS_CA_BUNDLE override a
                # session's verify (psf/requests#3829); MLflow passes them per request too.
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    json=body,
                    timeout=timeout,
                    verify=self.settings.verify,
                    cert=self.settings.cert,
                )
            except exceptions.SSLError as exc:
                raise StoreError(
                    f"{self.store}: TLS failed ({_reason(exc)})", hint=TLS_HINT
                ) from None
            except exceptions.ConnectionError as exc:
                if not last:
                    time.sleep(RETRY_PAUSE)
                    continue
                raise StoreUnreachable(
                    f"{self.store}: cannot connect ({_reason(exc)})", hint="is the server running?"
                ) from None
            except exceptions.Timeout:
                raise StoreUnreachable(
                    f"{self.store}: no answer to {endpoint} within "
                    f"{self.settings.read_timeout:g} s",
                    hint=f"set {names.MLFLOW_HTTP_TIMEOUT_ENV} to wait longer",
                ) from None
            except exceptions.RequestException as exc:
                raise StoreError(f"{self.store}: {endpoint} failed ({_reason(exc)})") from None
            self.server_date = response.headers.get("Date")
            if response.status_code in RETRY_STATUSES and not last:
                response.close()
                time.sleep(RETRY_PAUSE)
                continue
            return self._answer(response, endpoint, missing_ok=missing_ok)
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(
        self, response: requests.Response, endpoint: str, *, missing_ok: bool
    ) -> dict[str, Any] | None:
        status = response.status_code
        data = _json_object(response.content)
        if 200 <= status < 300:
            if not response.content:
                return {}  # as MLflow's client takes it (some compatible servers answer so)
            if data is None:
                raise NotAStore(
                    f"{self.store} does not answer like an MLflow tracking server ({endpoint} "
                    f"answered {server_text(_content_type(response))}, not a JSON object)",
                    hint="check the tracking URI (a server behind a path prefix needs it too)",
                )
            return data
        code = data.get("error_code") if data is not None else None
        detail = server_text(data.get("message", "")) if data is not None else ""
        if status in (401, 403) or code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            what = "refused the credentials" if status == 401 else "denied access"
            raise StoreAccessDenied(
                f"{self.store}: the server {what} (HTTP {status} on {endpoint})"
                + (f": {detail}" if detail else ""),
                hint=ACCESS_HINT,
            )
        if isinstance(code, str):
            if code == "RESOURCE_DOES_NOT_EXIST" and missing_ok:
                return None
            if code == "ENDPOINT_NOT_FOUND":
                raise NotAStore(
                    f"{self.store}: the server has no {endpoint} endpoint ({detail})",
                    hint="mltidy needs MLflow's tracking API (MLflow 2 or newer)",
                )
            raise MlflowApiError(
                f"{self.store}: {endpoint} failed: {server_text(code)}"
                + (f": {detail}" if detail else ""),
                error_code=code,
                status=status,
                detail=detail,
            )
        if status in NOT_AN_API:
            raise NotAStore(
                f"{self.store} does not answer like an MLflow tracking server (HTTP {status} "
                f"on {API}{endpoint})",
                hint="check the tracking URI (a server behind a path prefix needs it too)",
            )
        if status in RETRY_STATUSES:
            raise StoreUnreachable(
                f"{self.store}: the server or a proxy before it answered HTTP {status}",
                hint="is the server running?",
            )
        raise StoreError(
            f"{self.store}: {endpoint} failed with HTTP {status}"
            + (f": {detail}" if detail else "")
        )


def _authorize(header: str) -> Authorize:
    def apply(request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = header
        return request

    return apply


def _json_object(content: bytes) -> dict[str, Any] | None:
    if not content:
        return None
    try:
        data = json.loads(content)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _content_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip() or "no content type"


def _reason(exc: BaseException) -> str:
    """A short, secret-free reason for a failed connection (``connection refused``, ...)."""
    text = str(exc)
    lowered = text.lower()
    for marker, reason in (
        ("connection refused", "connection refused"),
        ("name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("temporary failure in name resolution", "unknown host"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network is unreachable"),
        ("timed out", "timed out"),
        ("certificate verify failed", "certificate verify failed"),
        ("wrong version number", "the server does not speak TLS on this port"),
        ("remotedisconnected", "the server closed the connection"),
        ("connection reset", "connection reset"),
    ):
        if marker in lowered:
            return reason
    return server_text(type(exc).__name__)


__all__ = ["AJAX_API", "API", "HttpSettings", "MlflowApiError", "RestClient", "server_text"]
