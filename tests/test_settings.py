"""Settings: flags over environment over .env; every wrong value named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowtel._errors import ConfigError
from flowtel._secret import Secret, redact
from flowtel._settings import Settings

KEY = "ds_0123456789abcdef0123456789abcdef"
BASE = {"FLOWTEL_API_URL": "http://127.0.0.1:9", "FLOWTEL_API_KEY": KEY}


def test_precedence_flags_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport FLOWTEL_API_URL='http://from-file:1'\nFLOWTEL_API_KEY=" + KEY + "\n"
        "FLOWTEL_PAGE_SIZE=100\nDATABASE_URL=postgresql://file/db\n"
    )
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://flag/db", "FLOWTEL_SOURCE": None},
        environ={"FLOWTEL_API_URL": "http://from-env:2", "FLOWTEL_PAGE_SIZE": "200"},
        env_file=env_file,
    )
    assert settings.api_url == "http://from-env:2"
    assert settings.database_url == "postgresql://flag/db"
    assert settings.page_size == 200
    assert settings.api_key.reveal() == KEY
    assert settings.source == "auto"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FLOWTEL_API_URL": "http://x"}, "FLOWTEL_API_KEY is not set"),
        ({"FLOWTEL_API_KEY": KEY}, "FLOWTEL_API_URL is not set"),
        ({**BASE, "FLOWTEL_API_URL": "ftp://x"}, "FLOWTEL_API_URL must be an http(s) URL"),
        (
            {**BASE, "FLOWTEL_API_URL": "htp://u:pw@127.0.0.1:1"},
            "FLOWTEL_API_URL must be an http(s) URL, not 'htp://***@127.0.0.1:1'",
        ),
        ({**BASE, "FLOWTEL_API_URL": "http://h:port"}, "FLOWTEL_API_URL must be an http(s) URL"),
        (
            {**BASE, "FLOWTEL_PAGE_SIZE": "lots"},
            "FLOWTEL_PAGE_SIZE must be a whole number, not 'lots'",
        ),
        ({**BASE, "FLOWTEL_BACKOFF_CAP": "soon"}, "FLOWTEL_BACKOFF_CAP must be a number, not"),
        ({**BASE, "FLOWTEL_PAGE_SIZE": "9000"}, "FLOWTEL_PAGE_SIZE must be between 1 and 5000"),
        ({**BASE, "FLOWTEL_SOURCE": "ftp"}, "FLOWTEL_SOURCE must be one of auto, feed, events"),
        ({**BASE, "FLOWTEL_VERIFY_TLS": "maybe"}, "FLOWTEL_VERIFY_TLS must be true or false"),
        ({**BASE, "DATABASE_URL": "mysql://u:pw@h/db"}, "DATABASE_URL must be a postgresql:// URL"),
        ({**BASE, "FLOWTEL_FEED_SHARDS": "0"}, "FLOWTEL_FEED_SHARDS must be at least 1, not 0"),
        ({**BASE, "FLOWTEL_WRITERS": "0"}, "FLOWTEL_WRITERS must be at least 1, not 0"),
        ({**BASE, "FLOWTEL_LISTING_SHARE": "1.5"}, "FLOWTEL_LISTING_SHARE must be in [0, 1)"),
        ({**BASE, "FLOWTEL_FEED_SHARDS": "100000"}, "FLOWTEL_FEED_SHARDS must be at most 64"),
        (
            {**BASE, "FLOWTEL_DAMAGED_PAGE_RETRIES": "-5"},
            "FLOWTEL_DAMAGED_PAGE_RETRIES must be at least 0, not -5",
        ),
        (
            {**BASE, "FLOWTEL_MAX_RESUMES_WITHOUT_PROGRESS": "0"},
            "FLOWTEL_MAX_RESUMES_WITHOUT_PROGRESS must be at least 1, not 0",
        ),
        (
            {**BASE, "FLOWTEL_REQUEST_TIMEOUT": "0"},
            "FLOWTEL_REQUEST_TIMEOUT must be more than 0 seconds, not 0",
        ),
        (
            {**BASE, "FLOWTEL_REQUEST_TIMEOUT": "-5"},
            "FLOWTEL_REQUEST_TIMEOUT must be more than 0 seconds, not -5",
        ),
        (
            {**BASE, "FLOWTEL_BACKOFF_BASE": "-1"},
            "FLOWTEL_BACKOFF_BASE must be 0 or more seconds, not -1",
        ),
        (
            {**BASE, "FLOWTEL_BACKOFF_CAP": "nan"},
            "FLOWTEL_BACKOFF_CAP must be more than 0 seconds, not nan",
        ),
        (
            {**BASE, "FLOWTEL_CURSOR_MARGIN": "-1"},
            "FLOWTEL_CURSOR_MARGIN must be 0 or more seconds, not -1",
        ),
        (
            {**BASE, "FLOWTEL_DB_RECONNECT_TIMEOUT": "inf"},
            "FLOWTEL_DB_RECONNECT_TIMEOUT must be more than 0 seconds, not inf",
        ),
    ],
)
def test_wrong_settings_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ=environ, env_file=None)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and KEY not in text and "pw" not in text


def test_bad_env_file_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("FLOWTEL_API_URL=http://x\nthis is not a setting\n")
    with pytest.raises(ConfigError, match=r"line 2: expected KEY=value"):
        Settings.from_env(environ={}, env_file=env_file)


def test_an_env_file_may_comment_after_a_value(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"FLOWTEL_API_URL='http://x' # the simulator\nFLOWTEL_API_KEY={KEY}  # mine\n"
        "DATABASE_URL=postgresql://u:a#b@h/db\n"
    )
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert settings.api_url == "http://x"
    assert settings.api_key.reveal() == KEY
    assert settings.database_url == "postgresql://u:a#b@h/db"  # no space before: not a comment


def test_an_env_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"FLOWTEL_API_URL=http://x\nFLOWTEL_API_KEY={KEY}\n", encoding="utf-8-sig")
    assert Settings.from_env(environ={}, env_file=env_file).api_url == "http://x"


def test_an_env_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"FLOWTEL_API_URL=http://x\nFLOWTEL_API_KEY={KEY}\n", encoding="utf-16")
    with pytest.raises(ConfigError, match=r"\.env is not UTF-8 text"):
        Settings.from_env(environ={}, env_file=env_file)


def test_the_key_never_shows() -> None:
    settings = Settings.from_env(environ=BASE, env_file=None)
    for text in (repr(settings), str(settings), f"{settings.api_key}", str(settings.api_key)):
        assert KEY not in text
    assert redact(f"oops {KEY} leaked", settings.api_key) == "oops *** leaked"
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")


async def test_tls_is_verified_unless_explicitly_turned_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import ssl

    from flowtel._ingest import http_client

    secure = Settings.from_env(environ=BASE, env_file=None)
    assert secure.verify_tls is True
    async with http_client(secure, None) as http:
        context = http._transport._pool._ssl_context  # type: ignore[attr-defined]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert "TLS" not in caplog.text

    insecure = Settings.from_env(environ={**BASE, "FLOWTEL_VERIFY_TLS": "false"}, env_file=None)
    async with http_client(insecure, None) as http:
        context = http._transport._pool._ssl_context  # type: ignore[attr-defined]
        assert context.verify_mode == ssl.CERT_NONE
    assert "TLS certificate verification is OFF" in caplog.text
