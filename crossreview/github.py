"""A small GitHub REST client for the gate: one comment per pull request, and a label.

Plain REST over httpx (the library litellm already brings), against
``$GITHUB_API_URL`` (github.com, GitHub Enterprise, or a test server on
127.0.0.1). The token goes in the Authorization header and nowhere else:
errors quote GitHub's message, never the request's headers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

_MAX_PAGES = 50  # 5,000 comments: a pull request with more is not one the gate commented on first
RETRIES = 3
"""Retries of one call (see GitHubClient._call); waits of 1, 2, 4 s, or what Retry-After says, at most 20 s."""
_MAX_WAIT = 20.0


def _retryable(method: str, resp: httpx.Response) -> bool:
    if resp.status_code == 429:
        return True
    if resp.status_code == 403:
        text = resp.text.lower()
        return "rate limit" in text or resp.headers.get("x-ratelimit-remaining") == "0"
    return resp.status_code in (500, 502, 503, 504) and method != "POST"


def _backoff(attempt: int, retry_after: str | None) -> float:
    try:
        wait = float(retry_after) if retry_after is not None else 2.0 ** attempt
    except ValueError:
        wait = 2.0 ** attempt
    return max(0.0, min(wait, _MAX_WAIT))


class GitHubError(Exception):
    """A GitHub API call that failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class GitHubClient:
    """The calls the gate makes, for one repository (``owner/name``)."""

    def __init__(self, api_url: str, token: str, repository: str, timeout: float = 30.0):
        if repository.count("/") != 1:
            raise GitHubError(f"GITHUB_REPOSITORY={repository!r}: expected owner/name")
        self.repository = repository
        self._http = httpx.Client(
            base_url=api_url.rstrip("/") + "/",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "crossreview-gate",
            },
            timeout=timeout,
        )

    def _sleep(self, seconds: float) -> None:
        import time

        time.sleep(seconds)

    def __enter__(self) -> "GitHubClient":
        return self

    def __exit__(self, *exc) -> None:
        self._http.close()

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kw) -> httpx.Response:
        """One API call, retried a few times where GitHub asks for it or a retry cannot do harm.

        Without retries one rate-limited or failed update left the pull
        request's comment as it was, still showing an earlier head's verdict.
        A 429 (or a 403 that says it is a rate limit) is retried for every
        method, since GitHub did nothing; a 5xx or a lost connection only for
        calls that are safe to repeat (not POST, which could comment twice).
        """
        for attempt in range(RETRIES + 1):
            last = attempt == RETRIES
            try:
                resp = self._http.request(method, path.lstrip("/"), **kw)
            except httpx.HTTPError as exc:
                if last or method == "POST" or not isinstance(exc, httpx.TransportError):
                    raise GitHubError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
                self._sleep(_backoff(attempt, None))
                continue
            if resp.status_code in ok:
                return resp
            if not last and _retryable(method, resp):
                self._sleep(_backoff(attempt, resp.headers.get("Retry-After")))
                continue
            try:
                message = resp.json().get("message", "")
            except ValueError:
                message = resp.text[:200]
            raise GitHubError(f"{method} {path}: HTTP {resp.status_code} {message}".rstrip(), resp.status_code)
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt returns or raises

    def _repo(self, rest: str) -> str:
        return f"repos/{self.repository}/{rest}"

    def comments(self, number: int) -> list[dict[str, Any]]:
        """Every comment on issue / pull request ``number``, oldest first (following pagination)."""
        out: list[dict[str, Any]] = []
        url: str | None = self._repo(f"issues/{number}/comments?per_page=100")
        for _ in range(_MAX_PAGES):
            if url is None:
                break
            resp = self._call("GET", url)
            out += resp.json()
            nxt = resp.links.get("next", {}).get("url")
            url = nxt.removeprefix(str(self._http.base_url)) if nxt else None
        return out

    def login(self) -> str | None:
        """Who the token acts as, for a personal token; None for an app's (GITHUB_TOKEN: GET /user is refused)."""
        if not hasattr(self, "_login"):
            try:
                self._login = self._call("GET", "user").json().get("login")
            except (GitHubError, ValueError, AttributeError):
                self._login = None
        return self._login

    def find_comment(self, number: int, marker: str) -> dict[str, Any] | None:
        """The latest comment on ``number`` the gate wrote with ``marker`` (the one it keeps updating).

        Only the gate's own: the marker opens a line (a human's quote reply has
        it after "> "), and the author is a bot (GITHUB_TOKEN comments as
        github-actions[bot]) or, for a personal token, the token's own user.
        Anyone can paste the marker into a comment; the gate must neither
        overwrite that comment nor read its facts.
        """
        marked = [c for c in self.comments(number)
                  if any(line.startswith(marker) for line in (c.get("body") or "").splitlines())]
        if not marked:
            return None

        def author(c: dict[str, Any]) -> dict[str, Any]:
            return c.get("user") or {}

        mine = [c for c in marked if author(c).get("type") == "Bot" or str(author(c).get("login", "")).endswith("[bot]")]
        if not mine:
            me = self.login()
            mine = [c for c in marked if me and author(c).get("login") == me]
        return mine[-1] if mine else None

    def upsert_comment(self, number: int, body: str, marker: str) -> str:
        """Update the gate's comment in place, or create it the first time; says which."""
        existing = self.find_comment(number, marker)
        if existing:
            self._call("PATCH", self._repo(f"issues/comments/{existing['id']}"), json={"body": body})
            return f"updated comment {existing['id']}"
        created = self._call("POST", self._repo(f"issues/{number}/comments"), json={"body": body}).json()
        return f"created comment {created.get('id')}"

    def pull_head(self, number: int) -> str:
        """The head commit sha of pull request ``number``."""
        return self._call("GET", self._repo(f"pulls/{number}")).json()["head"]["sha"]

    def add_label(self, number: int, label: str) -> None:
        """Add ``label`` to ``number`` (GitHub creates the label if the repository lacks it)."""
        self._call("POST", self._repo(f"issues/{number}/labels"), json={"labels": [label]})

    def remove_label(self, number: int, label: str) -> str:
        """Take ``label`` off ``number``; a label that is not there is fine."""
        resp = self._call("DELETE", self._repo(f"issues/{number}/labels/{quote(label, safe='')}"), ok=(200, 204, 404))
        return f"removed {label}" if resp.status_code != 404 else f"{label} was not set"
