from __future__ import annotations

from pathlib import Path

import pytest

from prompttap.collector.config import ConfigError, Upstream, load
from prompttap.schemas.credentials import mask, redact_headers, redact_query


@pytest.mark.parametrize(
    ("upstream", "path", "expected"),
    [
        ("https://api.openai.com", "/v1/chat/completions", "/v1/chat/completions"),
        ("https://openrouter.ai/api/v1", "/v1/chat/completions", "/api/v1/chat/completions"),
        ("https://host/v1/", "/v1/models", "/v1/models"),
        ("http://litellm:4000/openai", "/v1/models", "/openai/v1/models"),
        ("http://ollama:11434/api", "/api/chat", "/api/chat"),
        ("https://host/v1", "/chat/completions", "/v1/chat/completions"),
    ],
)
def test_upstream_path_join_rule(upstream, path, expected):
    assert Upstream.parse("default", upstream).target_path(path) == expected


def test_precedence_flags_over_file_over_env(tmp_path: Path):
    cfg = tmp_path / "prompttap.toml"
    cfg.write_text('listen = "127.0.0.1:9001"\nupstream = "http://file:1"\n[routes]\nappx = "http://appx:2"\n')
    env = {
        "PROMPTTAP_UPSTREAM": "http://env:3",
        "PROMPTTAP_RETENTION_DAYS": "9",
        "PROMPTTAP_LISTEN": "127.0.0.1:9002",
    }
    s = load({"config": str(cfg), "listen": "127.0.0.1:9003"}, env)
    assert s.listen == ("127.0.0.1", 9003)  # flag beats file and env
    assert s.upstream.url == "http://file:1"  # file beats env
    assert s.retention_days == 9  # env fills in
    assert s.routes["appx"].base == "http://appx:2"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"listen": "nope"}, "HOST:PORT"),
        ({"upstream": "ftp://x"}, "http(s) URL"),
        ({"routes": ["noequals"]}, "NAME=URL"),
        ({"routes": ["bad name=http://x"]}, "letters"),
        ({"store": "postgres://x"}, "chdb:///path"),
        ({"config": "/does/not/exist.toml"}, "does not exist"),
        ({"max_body_bytes": "lots"}, "integer"),
    ],
)
def test_bad_settings_have_clear_errors(flags, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(flags, {})


def test_redaction_keeps_scheme_and_last_four():
    assert mask("Bearer sk-proj-abcdefghijklmnop1234") == "Bearer ...1234"
    assert mask("sk-ant-abcdefghijklmnopWXYZ") == "...WXYZ"
    assert mask("short") == "..."
    headers = redact_headers(
        [
            (b"Authorization", b"Bearer sk-secretsecretsecret9999"),
            (b"x-api-key", b"sk-ant-secretsecret7777"),
            (b"api-key", b"azure-secret-key-5555"),
            (b"cookie", b"session=abcdefghijklmnop"),
            (b"x-goog-api-key", b"AIzaSyabcdefghijklmn0000"),
            (b"proxy-authorization", b"Basic dXNlcjpwYXNzd29yZA=="),
            (b"content-type", b"application/json"),
        ]
    )
    assert headers["authorization"] == "Bearer ...9999"
    assert headers["x-api-key"] == "...7777"
    assert headers["api-key"] == "...5555"
    assert "abcdefghijklmnop" not in headers["cookie"]
    assert headers["x-goog-api-key"] == "...0000"
    assert headers["proxy-authorization"] == "Basic ...ZA=="
    assert headers["content-type"] == "application/json"
    q = redact_query("alt=sse&key=AIzaSyabcdefghijklmn0000&api_key=abcdefghijklmnop1111")
    assert "AIzaSyabcdefghijklmn" not in q and "abcdefghijklmnop1111" not in q
    assert "alt=sse" in q and "0000" in q
