"""Who may talk to the live view: loopback by default, a bearer token for anything else, same-origin POSTs.

- `parse_bind("[HOST:]PORT")`: where to listen (host 127.0.0.1 unless given).
- `resolve_token(host, token, token_file)`: binding a non-loopback address needs a token: from
  `--token-file`, `--token` or the `SPERM_EDGE_TOKEN` environment variable (a token on the command
  line shows in `ps`); `auto` makes one. Off loopback, a known default (`change-me`, ...) or a token
  shorter than `MIN_REMOTE_TOKEN` characters is refused.
- `Guard`: an ASGI middleware in front of every route. A request without the right token
  (`Authorization: Bearer TOKEN`, `?token=TOKEN` or the view's HTTP-only cookie, compared in
  constant time) gets 401; the page loaded with `?token=` is redirected to itself without it, the
  token moved into the cookie, so it leaves the address bar and the browser's history. Without a
  token (loopback only) the Host header must name a loopback host, so a web page elsewhere
  cannot reach the view through DNS rebinding. POSTs whose `Origin` or `Sec-Fetch-Site` shows
  another site get 403, so a page in another tab cannot pause or finish the run.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sperm_edge.errors import SpermEdgeError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
TOKEN_ENV = "SPERM_EDGE_TOKEN"
COOKIE = "sperm_edge_token"
MIN_TOKEN, MIN_REMOTE_TOKEN = 8, 16
KNOWN_DEFAULTS = frozenset({"change-me", "changeme", "password", "secret", "token", "admin", "sperm-edge"})


def parse_bind(text: str) -> tuple[str, int]:
    """`8050`, `127.0.0.1:8050`, `0.0.0.0:8050`, `[::1]:8050`; a host alone (`lab-pc`, `[::1]`) takes port 8050."""
    text = str(text).strip()
    if text.isdigit():
        host, port = DEFAULT_HOST, text
    elif text.startswith("[") and "]" in text:
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":") if text.count(":") == 1 else (text, "", "")
    port = port or str(DEFAULT_PORT)
    bare_ipv6 = ":" in host and not text.startswith("[")
    if not text or bare_ipv6 or not port.isdigit() or int(port) > 65535:
        raise SpermEdgeError(f"--view wants [HOST:]PORT with a port 0-65535 (IPv6 in brackets), not {text!r}")
    return host or DEFAULT_HOST, int(port)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None, token_file: str | Path | None = None) -> str | None:
    """The token the view will require (None: none, loopback only): `--token-file`, else `--token`, else the
    `SPERM_EDGE_TOKEN` environment variable; `auto` generates one."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as err:
            raise SpermEdgeError(f"--token-file {token_file} cannot be read: {err.strerror or err}") from err
    elif token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token == "auto":
        return secrets.token_urlsafe(18)
    if token is not None and len(token) < MIN_TOKEN:
        raise SpermEdgeError(f"the view's token must be at least {MIN_TOKEN} characters (or auto)")
    if token is None and not is_loopback(host):
        raise SpermEdgeError(f"binding {host} (not loopback) needs a token: --token-file FILE, {TOKEN_ENV}, or auto")
    if token is not None and not is_loopback(host):
        if token.lower() in KNOWN_DEFAULTS:
            raise SpermEdgeError(f"the view's token is a known default ({token!r}): set a random one (or auto)")
        if len(token) < MIN_REMOTE_TOKEN:
            raise SpermEdgeError(f"off loopback the view's token must be at least {MIN_REMOTE_TOKEN} characters")
    return token


def masked(token: str | None) -> str:
    """A token as logs show it: its first 4 characters only."""
    return "" if not token else token[:4] + "…"


def url_for(host: str, port: int, token: str | None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def _host_name(host_header: str) -> str:
    """The host part of a Host header (`[::1]:8050` -> `::1`)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware: token, Host and same-origin checks before the app sees a request."""

    def __init__(self, app, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.check(scope, headers)
        if problem is None and self._token_in_query(scope) and scope["path"] == "/" and scope["method"] == "GET":
            await self._to_cookie(send)
            return
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        body = message.encode()
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *extra],
            }
        )  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    def _token_in_query(self, scope) -> bool:
        return self.token is not None and "token" in parse_qs(scope.get("query_string", b"").decode("latin-1"))

    async def _to_cookie(self, send) -> None:
        """The page without `?token=` in its address: the token goes into an HTTP-only, same-site cookie."""
        cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode("latin-1")),
                                (b"cache-control", b"no-store"), (b"content-length", b"0")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})

    def check(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """None when the request may pass, else (status, message)."""
        if self.token is not None:
            given = headers.get("authorization", "")
            given = given[7:].strip() if given.lower().startswith("bearer ") else None
            if given is None:
                given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [None])[0]
            if given is None and "cookie" in headers:
                jar = SimpleCookie()
                jar.load(headers["cookie"])
                given = jar[COOKIE].value if COOKIE in jar else None
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                return 401, "a valid token is required (Authorization: Bearer TOKEN, ?token=TOKEN or the view's cookie)"
        elif not is_loopback(_host_name(headers.get("host", ""))):
            return 403, "this view answers loopback host names only"
        if scope["method"] not in ("GET", "HEAD"):
            site = headers.get("sec-fetch-site")
            if site is not None and site not in ("same-origin", "none"):
                return 403, "cross-origin requests are refused"
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc != headers.get("host"):
                return 403, "cross-origin requests are refused"
        return None


def announce(url: str, token: str | None, generated: bool, folder: Path) -> str:
    """The line a command prints for its page: the address with the token masked; a generated token is written
    to FOLDER/view_token (readable by its owner only) for the user to open the page with, never to the log."""
    line = url if token is None else url.replace(f"token={token}", f"token={masked(token)}")
    if generated and token is not None:
        path = folder / "view_token"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(token + "\n")
        line += f" (the token is in {path})"
    return line
