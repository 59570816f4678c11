"""Configuration: defaults, the shipped TOML, environment overrides, and readable errors."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamd.errors import ConfigError
from streamd.settings import Settings, load

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config" / "streamd.toml"


def test_shipped_config_lists_every_setting_with_its_default() -> None:
    text = SHIPPED.read_text()
    shipped = tomllib.loads(text)
    defaults = Settings()
    for section, field in Settings.model_fields.items():
        model: BaseModel = getattr(defaults, section)
        assert isinstance(model, BaseModel)
        for name, info in type(model).model_fields.items():
            assert info.description, f"{section}.{name} has no description"
            default = getattr(model, name)
            if default is None:
                assert f"# {name} = " in text, f"{section}.{name} (unset by default) is not documented"
                continue
            assert name in shipped[section], f"{section}.{name} is missing from config/streamd.toml"
            value = shipped[section][name]
            assert type(model).model_validate({**model.model_dump(), name: value}) == model, (
                f"{section}.{name}: config file says {value!r}, default is {default!r}"
            )
        assert field.description


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {
        "STREAMD_SERVER__PORT": "9001",
        "STREAMD_AUTH__API_KEYS": "a, b,,",
        "STREAMD_STORAGE__DATA_DIR": str(tmp_path),
        "UNRELATED": "x",
    }
    settings = load(SHIPPED, env)
    assert settings.server.port == 9001
    assert settings.auth.api_keys == ("a", "b")
    assert settings.storage.data_dir == tmp_path
    assert settings.database_path == tmp_path / "streamd.sqlite3"


def test_command_line_overrides_the_environment(tmp_path: Path) -> None:
    settings = load(SHIPPED, {"STREAMD_SERVER__PORT": "9001"}, {"server": {"port": 9002, "host": None}})
    assert settings.server.port == 9002
    assert settings.server.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMD_SERVER__PORTT": "1"}, "STREAMD_SERVER__PORTT names no setting"),
        ({"STREAMD_SERVER__PORT": "eighty"}, "server.port: Input should be a valid integer"),
        ({"STREAMD_SERVER__PORT": "70000"}, "server.port: Input should be less than or equal to 65535"),
        ({"STREAMD_LOGGING__LEVEL": "LOUD"}, "logging.level"),
    ],
)
def test_bad_values_are_reported_with_their_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(SHIPPED, env)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"server.prot: Extra inputs are not permitted"):
        load(config, {})


def test_binding_beyond_loopback_needs_a_key() -> None:
    load(SHIPPED, {"STREAMD_SERVER__HOST": "::1"}).check_bind_allowed()
    with pytest.raises(ConfigError, match="not a loopback address and no API key"):
        load(SHIPPED, {"STREAMD_SERVER__HOST": "0.0.0.0"}).check_bind_allowed()
    load(SHIPPED, {"STREAMD_SERVER__HOST": "0.0.0.0", "STREAMD_AUTH__API_KEYS": "k"}).check_bind_allowed()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamd", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_check_config_accepts_the_shipped_file_and_rejects_a_broken_one(tmp_path: Path) -> None:
    ok = run_cli("check-config", "--config", str(SHIPPED))
    assert ok.returncode == 0, ok.stderr
    assert '"port": 8080' in ok.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text("[server]\nport = 'x'\n")
    bad = run_cli("check-config", "--config", str(broken))
    assert bad.returncode == 2
    assert "server.port: Input should be a valid integer" in bad.stderr
    missing = run_cli("check-config", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_serve_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "not a loopback address and no API key is configured" in result.stderr


def test_readme_documents_every_setting_and_metric() -> None:
    from streamd.metrics import Metrics

    readme = (REPO / "README.md").read_text()
    defaults = Settings()
    for section in Settings.model_fields:
        model = getattr(defaults, section)
        for name in type(model).model_fields:
            assert f"| `{section}.{name}` |" in readme, f"{section}.{name} is missing from the README"
    for family in Metrics().registry.collect():
        if family.name.startswith("streamd_"):
            suffix = "_total" if family.type == "counter" else ""
            assert f"`{family.name}{suffix}`" in readme, f"{family.name} is missing from the README"
