from __future__ import annotations

from pathlib import Path

import pytest

from sperm_edge.errors import SpermEdgeError
from sperm_edge.view import RunView
from sperm_edge.view.security import announce, is_loopback, parse_bind, resolve_token, url_for
from tests.view.conftest import request

TOKEN = "correct-horse-battery"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8050", ("127.0.0.1", 8050)), ("127.0.0.1:9000", ("127.0.0.1", 9000)), ("0.0.0.0:80", ("0.0.0.0", 80)),
     ("[::1]:8050", ("::1", 8050)), (":0", ("127.0.0.1", 0)), ("lab-pc", ("lab-pc", 8050)),
     ("0.0.0.0:", ("0.0.0.0", 8050)), ("[::1]", ("::1", 8050))],
)  # fmt: skip
def test_parse_bind(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["", "127.0.0.1:http", "99999", "::1:8050", "[::1]:x"])
def test_parse_bind_rejects_bad_ports(text: str) -> None:
    with pytest.raises(SpermEdgeError, match=r"\[HOST:\]PORT"):
        parse_bind(text)


def test_tokens() -> None:
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert resolve_token("127.0.0.1", None) is None
    with pytest.raises(SpermEdgeError, match="needs a token"):
        resolve_token("0.0.0.0", None)
    with pytest.raises(SpermEdgeError, match="at least 8"):
        resolve_token("0.0.0.0", "short")
    first, second = resolve_token("0.0.0.0", "auto"), resolve_token("0.0.0.0", "auto")
    assert first != second and len(first) >= 20
    assert url_for("0.0.0.0", 8050, "abc") == "http://127.0.0.1:8050/?token=abc"
    assert (
        announce(url_for("0.0.0.0", 8050, "abcdefgh"), "abcdefgh", False, Path())
        == "http://127.0.0.1:8050/?token=abcd…"
    )


def test_off_loopback_a_token_comes_from_a_file_or_the_environment_and_is_not_a_default(tmp_path, monkeypatch):
    monkeypatch.delenv("SPERM_EDGE_TOKEN", raising=False)
    for weak, message in (("change-me", "known default"), ("only12chars!", "at least 16")):
        with pytest.raises(SpermEdgeError, match=message):
            resolve_token("0.0.0.0", weak)
        assert resolve_token("127.0.0.1", weak) == weak  # loopback: the user's own machine
    secret = tmp_path / "token"
    secret.write_text("a-long-random-token-from-a-file\n")
    assert resolve_token("0.0.0.0", None, secret) == "a-long-random-token-from-a-file"
    monkeypatch.setenv("SPERM_EDGE_TOKEN", "another-long-random-token")
    assert resolve_token("0.0.0.0", None) == "another-long-random-token"
    with pytest.raises(SpermEdgeError, match="cannot be read"):
        resolve_token("0.0.0.0", None, tmp_path / "missing")


def test_token_is_required_on_every_route(finished_run: Path) -> None:
    with RunView(finished_run, port=0, token=TOKEN) as served:
        port = served.port
        for path in ("/", "/api/status", "/api/events", "/flagged/1.png", "/nowhere"):
            assert request(port, path)[0] == 401
            assert request(port, path, headers={"Authorization": "Bearer wrong-token-xx"})[0] == 401
            assert request(port, f"{path}?token=wrong-token-xx")[0] == 401
        assert request(port, "/api/explain/1", method="POST")[0] == 401
        status, headers, _ = request(port, "/api/status")
        assert headers.get("www-authenticate") == "Bearer"
        assert request(port, "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert request(port, f"/api/status?token={TOKEN}")[0] == 200
        status, headers, _ = request(port, f"/?token={TOKEN}")  # the page: its token moves into a cookie
        cookie = headers.get("set-cookie", "")
        assert status == 303 and headers.get("location") == "/" and "HttpOnly" in cookie and "SameSite" in cookie
        assert request(port, "/", headers={"Cookie": cookie.split(";")[0]})[0] == 200
        assert request(port, "/api/status", headers={"Cookie": "sperm_edge_token=wrong-token-xx"})[0] == 401


def test_cross_origin_posts_and_foreign_hosts_are_refused(finished_run: Path) -> None:
    with RunView(finished_run, port=0) as served:
        port = served.port
        host = f"127.0.0.1:{port}"
        evil = {"Host": host, "Origin": "http://evil.example"}
        assert request(port, "/api/finish", method="POST", headers=evil)[0] == 403
        assert request(port, "/api/pause", method="POST", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
        # same origin reaches the route (a finished run cannot be paused: 409)
        same = {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
        assert request(port, "/api/pause", method="POST", headers=same)[0] == 409
        # DNS rebinding: a page served as evil.example that resolves to 127.0.0.1
        assert request(port, "/api/status", headers={"Host": f"evil.example:{port}"})[0] == 403
        assert request(port, "/api/status", headers={"Host": f"localhost:{port}"})[0] == 200
