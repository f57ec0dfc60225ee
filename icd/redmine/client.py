"""HTTP access to Redmine's REST API: python-redmine's engine with working timeouts, retries,
request counting, and one clear line per failure.

python-redmine 2.5.0 sets ``requests={'timeout': ...}`` on the ``requests.Session``, which
``requests`` ignores, so a hung server would block a sync forever.  ``IcdEngine`` overrides
``request`` to pass ``timeout=`` and ``verify=`` on every call, retries connection errors and
5xx with exponential back-off (a POST only when the connection was never made, so a create is
not sent twice), counts requests and writes, and turns every failure into a ``RedmineError``
whose message is one line and never contains the API key.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

import requests
from redminelib import Redmine
from redminelib.engines.sync import SyncEngine

from .config import RedmineConfig

log = logging.getLogger("icd.redmine")

RETRY_STATUS = {500, 502, 503, 504}
PAGE = 100  # Redmine's maximum page size


class RedmineError(Exception):
    """A Redmine failure explained in one line (the key is never part of it)."""

    def __init__(self, message: str, status: Optional[int] = None, errors: Optional[list[str]] = None):
        super().__init__(message)
        self.status = status
        self.errors = errors or []


@dataclass
class Stats:
    """What a run cost: requests by method, writes, seconds spent waiting for Redmine."""

    requests: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    seconds: float = 0.0

    @property
    def writes(self) -> int:
        return sum(n for m, n in self.by_method.items() if m != "GET")

    def summary(self) -> str:
        parts = ", ".join(f"{m} {n}" for m, n in sorted(self.by_method.items()))
        return f"{self.requests} HTTP requests ({parts or 'none'}), {self.writes} writes, {self.seconds:.2f} s"


def redact(text: str, secret: Optional[str]) -> str:
    if secret:
        text = text.replace(secret, "***")
    return text


class IcdEngine(SyncEngine):
    """python-redmine engine whose timeouts work; see the module docstring."""

    transport: Optional[Callable[..., Any]] = None  # (method, url, **kwargs) -> response; tests inject one

    def configure(self, *, base_url: str, key: str, timeout: float, retries: int, backoff: float,
                  verify: bool, transport: Optional[Callable[..., Any]] = None,
                  sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url, self._key = base_url, key
        self.timeout, self.retries, self.backoff, self.verify = timeout, retries, backoff, verify
        self.transport = transport or self.session.request
        self.sleep = sleep
        self.stats = Stats()
        self.last_date: Optional[str] = None

    # python-redmine calls this for everything (resource managers too)
    def request(self, method, url, headers=None, params=None, data=None, what: str = ""):
        kwargs = self.construct_request_kwargs(method, dict(headers or {}), params, data)
        kwargs["headers"] = {**self.requests.get("headers", {}), **kwargs["headers"]}
        verb = method.upper()
        path = url[len(self.base_url):] if url.startswith(self.base_url) else url
        what = what or f"{verb} {urlsplit(path).path}"
        attempt, delay = 0, self.backoff
        while True:
            attempt += 1
            self.stats.requests += 1
            self.stats.by_method[verb] = self.stats.by_method.get(verb, 0) + 1
            started = time.perf_counter()
            try:
                response = self.transport(method, url, timeout=self.timeout, verify=self.verify,
                                          allow_redirects=False, **kwargs)
            except requests.exceptions.RequestException as exc:
                self.stats.seconds += time.perf_counter() - started
                retry_ok = (verb != "POST" or _never_connected(exc)) and not _hopeless(exc)
                if retry_ok and attempt <= self.retries:
                    self._wait(delay, f"{what}: {type(exc).__name__}")
                    delay *= 2
                    continue
                raise RedmineError(self._network_message(exc, attempt)) from None
            self.stats.seconds += time.perf_counter() - started
            log.debug("%s %s -> %s", verb, urlsplit(path).path, response.status_code)
            if response.status_code in RETRY_STATUS and verb != "POST" and attempt <= self.retries:
                self._wait(delay, f"{what}: HTTP {response.status_code}")
                delay *= 2
                continue
            self.last_date = response.headers.get("Date") or self.last_date
            return self._process(response, what, attempt)

    def _wait(self, delay: float, why: str) -> None:
        self.stats.retries += 1
        log.info("retrying after %.1f s (%s)", delay, why)
        self.sleep(delay)

    def _process(self, response, what: str, attempts: int) -> Any:
        code = response.status_code
        url = self.base_url
        if code in (200, 201, 204):
            if not response.content or not response.content.strip():
                return {}
            ctype = response.headers.get("Content-Type", "")
            try:
                return response.json()
            except ValueError:
                raise RedmineError(f"{url} did not answer like a Redmine REST API ({ctype or 'no content type'}, "
                                   f"not JSON) while {what}: check the URL and that REST is enabled") from None
        if 300 <= code < 400:
            target = response.headers.get("Location", "?")
            raise RedmineError(f"{url} redirects to {redact(target, self._key)} ({code}) while {what}: "
                               "configure the final URL (an http->https redirect would turn writes into reads)", code)
        if code == 401:
            raise RedmineError(f"Redmine at {url} refused the API key (401 Unauthorized) while {what}: "
                               "check REDMINE_API_KEY or the key file, and that the REST API is enabled", code)
        if code == 403:
            raise RedmineError(f"Redmine at {url} forbids {what} (403 Forbidden): the key's user lacks the "
                               "permission in this project", code)
        if code == 404:
            raise RedmineError(f"not found on Redmine at {url} (404) while {what}: check the URL, the project "
                               "identifier and the task id", code)
        if code == 422:
            errors = _validation_errors(response)
            raise RedmineError(f"Redmine rejected {what} (422): {redact('; '.join(errors) or 'no details', self._key)}",
                               code, errors)
        if code in RETRY_STATUS:
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            raise RedmineError(f"Redmine at {url} failed with HTTP {code}{tries} while {what}", code)
        raise RedmineError(f"Redmine at {url} answered HTTP {code} while {what}", code)

    def _network_message(self, exc: Exception, attempts: int) -> str:
        url = self.base_url
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        text = redact(str(exc), self._key)
        if isinstance(exc, requests.exceptions.SSLError):
            if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
                return f"TLS verification failed for {url}{tries}: the certificate is not trusted (verify_tls stays on)"
            return f"TLS handshake with {url} failed{tries}: does the server speak https at that port?"
        if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout)):
            return f"Redmine at {url} did not answer within {self.timeout:g} s{tries}"
        if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text \
                or "Temporary failure in name resolution" in text or "No address associated" in text:
            return f"cannot resolve the host of {url}{tries}: check the Redmine URL"
        if "Connection refused" in text or "NewConnectionError" in text:
            return f"cannot connect to Redmine at {url}: connection refused{tries} (is the server down, or the port wrong?)"
        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                            requests.exceptions.InvalidSchema)):
            return f"'{url}' is not a usable Redmine URL (expected https://host[/path])"
        return f"cannot talk to Redmine at {url}{tries}: {type(exc).__name__}"


def _hopeless(exc: Exception) -> bool:
    """Errors a retry cannot cure: an unknown host name, a TLS failure, a malformed URL."""
    text = str(exc)
    return isinstance(exc, (requests.exceptions.SSLError, requests.exceptions.InvalidURL,
                            requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)) or any(
        m in text for m in ("Name or service not known", "nodename nor servname", "No address associated",
                            "Temporary failure in name resolution"))


def _never_connected(exc: Exception) -> bool:
    """True when the request surely did not reach the server (safe to resend a POST)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    text = str(exc)
    return isinstance(exc, requests.exceptions.ConnectionError) and (
        "Connection refused" in text or "NewConnectionError" in text or "Name or service not known" in text)


def _validation_errors(response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors", []) if isinstance(body, dict) else []
    return [": ".join(e) if isinstance(e, list) else str(e) for e in errors]


class Client:
    """Raw-JSON access to one Redmine, through python-redmine's (fixed) engine."""

    def __init__(self, cfg: RedmineConfig, key: str, transport: Optional[Callable[..., Any]] = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not cfg.url:
            raise RedmineError("no Redmine URL: set url in the [redmine] table of icd.toml or REDMINE_URL")
        parts = urlsplit(cfg.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RedmineError(f"'{cfg.url}' is not a usable Redmine URL (expected https://host[/path])")
        self.cfg = cfg
        self.url = cfg.url
        self.api = Redmine(cfg.url, key=key, engine=IcdEngine)
        self.engine: IcdEngine = self.api.engine
        self.engine.configure(base_url=cfg.url, key=key, timeout=cfg.timeout, retries=cfg.retries,
                              backoff=cfg.backoff, verify=cfg.verify_tls, transport=transport, sleep=sleep)
        self._cache: dict[str, Any] = {}

    @property
    def stats(self) -> Stats:
        return self.engine.stats

    def close(self) -> None:
        self.engine.session.close()

    # -- verbs -------------------------------------------------------------------------
    def get(self, path: str, what: str = "", **params) -> dict:
        return self.engine.request("get", self.url + path, params=params, what=what)

    def post(self, path: str, payload: dict, what: str = "") -> dict:
        return self.engine.request("post", self.url + path, data=payload, what=what)

    def put(self, path: str, payload: dict, what: str = "") -> dict:
        return self.engine.request("put", self.url + path, data=payload, what=what)

    def delete(self, path: str, what: str = "") -> dict:
        return self.engine.request("delete", self.url + path, what=what)

    def paged(self, path: str, container: str, what: str = "", **params) -> Iterator[dict]:
        """Every item of a paged list, 100 per request, sorted by id so pages do not shift."""
        params = {"sort": "id", **params}
        offset = 0
        while True:
            page = self.get(path, what=what, limit=PAGE, offset=offset, **params)
            items = page.get(container, [])
            yield from items
            offset += len(items)
            total = page.get("total_count")
            if not items or total is None or offset >= total:
                return

    # -- look-ups (one request each, cached) -------------------------------------------------
    def _cached(self, name: str, fetch: Callable[[], Any]) -> Any:
        if name not in self._cache:
            self._cache[name] = fetch()
        return self._cache[name]

    def whoami(self) -> dict:
        """The key's user. Redmine serves a wrong key as an anonymous visitor (public projects stay
        readable), so a sync checks the key once before it trusts what it reads."""
        def fetch():
            try:
                return self.get("/users/current.json", what="checking the API key")["user"]
            except RedmineError as exc:
                if exc.status == 404:
                    raise RedmineError(f"no Redmine REST API at {self.url} (404 on /users/current.json): "
                                       "check the URL", 404) from None
                raise
        return self._cached("whoami", fetch)

    def statuses(self) -> dict[str, dict]:
        return self._cached("statuses", lambda: {s["name"]: s for s in self.get(
            "/issue_statuses.json", what="reading the issue statuses")["issue_statuses"]})

    def trackers(self) -> dict[str, int]:
        return self._cached("trackers", lambda: {t["name"]: t["id"] for t in self.get(
            "/trackers.json", what="reading the trackers")["trackers"]})

    def priorities(self) -> dict[str, int]:
        return self._cached("priorities", lambda: {p["name"]: p["id"] for p in self.get(
            "/enumerations/issue_priorities.json", what="reading the priorities")["issue_priorities"]})

    def project(self, identifier: str) -> dict:
        return self._cached(f"project:{identifier}", lambda: self.get(
            f"/projects/{identifier}.json", what=f"reading project '{identifier}'")["project"])

    def categories(self, identifier: str) -> dict[str, int]:
        return self._cached(f"categories:{identifier}", lambda: {c["name"]: c["id"] for c in self.get(
            f"/projects/{identifier}/issue_categories.json",
            what=f"reading the categories of project '{identifier}'")["issue_categories"]})

    def user_id(self, login: str) -> Optional[int]:
        def fetch():
            users = self.get("/users.json", what=f"looking up Redmine user '{login}'", name=login).get("users", [])
            return next((u["id"] for u in users if u.get("login") == login), None)
        return self._cached(f"user:{login}", fetch)
