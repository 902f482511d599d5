"""The ``badgr`` command: ``check``, ``demo``, ``serve`` and ``status``.

In-process through ``badgr_middleware.cli.main(argv, out=...)``, and as the installed console
script in a subprocess (each bounded, each killed in a ``finally``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from badgr_middleware.cli import main
from badgr_middleware.http.asgi import BadgrApp
from badgr_middleware.simulator import SimulatedProvider, SimulatedServer, closed_port

SECRET = "sk-test-SECRET-0123456789abcdef"
BACKUP_SECRET = "sk-test-BACKUP-fedcba9876543210"
CLIENT_KEY = "client-key-for-cli-tests"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]

VALID_TOML = f"""
client_keys = ["{CLIENT_KEY}"]

[providers.primary]
kind = "openai"
base_url = "PRIMARY_URL"
api_key = "{SECRET}"

[providers.backup]
kind = "openai"
base_url = "BACKUP_URL"
api_key = "${{BADGR_CLI_TEST_BACKUP_KEY}}"

[models]
chat = ["primary/sim-small", "backup/sim-small"]
"""

INVALID_TOML = f"""
client_keys = ["${{BADGR_CLI_TEST_UNSET}}"]
retries = 3

[providers.primary]
kind = "openai"
api_key = "{SECRET}"

[providers.other]
kind = "opnai"
base_url = "not a url"
api_key = "{SECRET}"

[models]
chat = ["primary/sim-small", "nowhere/sim-small"]

[timeouts]
read = -1
"""

# every mistake in INVALID_TOML, by the path the report must name
INVALID_PATHS = [
    "client_keys[0]",
    "retries",
    "providers.primary.base_url",
    "providers.other.kind",
    "providers.other.base_url",
    "models.chat[1]",
    "timeouts.read",
]

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def badgr_script() -> str:
    """The installed console script itself (not a version-manager shim in front of it)."""
    script = Path(sysconfig.get_path("scripts")) / "badgr"
    if script.exists():
        return str(script)
    found = shutil.which("badgr")
    if found is None:
        pytest.skip("the badgr console script is not installed")
    return found


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: warnings shown, so leaks would be printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BADGR_")}
    env.update(PYTHONWARNINGS="default", **extra)
    return env


def run_badgr(*args: str, timeout: float = 30.0, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [badgr_script(), *args], capture_output=True, text=True, timeout=timeout,
        env=child_env(**env), check=False,
    )


def assert_clean(*outputs: str) -> None:
    for text in outputs:
        assert "Traceback" not in text, text
        assert "unclosed" not in text.lower(), text


def run_main(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("BADGR_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BADGR_CLI_TEST_BACKUP_KEY", BACKUP_SECRET)


def write_valid(tmp_path: Path, primary_url: str = "http://127.0.0.1:9/v1",
                backup_url: str = "http://127.0.0.1:9/v1") -> Path:
    path = tmp_path / "badgr.toml"
    text = VALID_TOML.replace("PRIMARY_URL", primary_url).replace("BACKUP_URL", backup_url)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- badgr check


def assert_valid_report(output: str) -> None:
    assert re.search(r"^  primary\s+openai\s+http://127\.0\.0\.1:9/v1\s+key \*{4}cdef$", output,
                     re.MULTILINE), output
    assert re.search(r"^  backup\s+openai\s+.*key \*{4}3210$", output, re.MULTILINE), output
    assert "  chat -> primary/sim-small > backup/sim-small" in output
    assert "Inbound auth: 1 client key(s)" in output
    assert output.rstrip().endswith("Config OK.")
    assert SECRET not in output and BACKUP_SECRET not in output
    assert "sk-test" not in output


def test_check_valid_config(tmp_path: Path, env_key: None) -> None:
    code, output = run_main("check", "--config", str(write_valid(tmp_path)))
    assert code == 0, output
    assert_valid_report(output)
    assert "error" not in output and "warning" not in output


def test_check_reports_every_problem_at_once(
    tmp_path: Path, env_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BADGR_CLI_TEST_UNSET", raising=False)
    path = tmp_path / "bad.toml"
    path.write_text(INVALID_TOML)
    code, output = run_main("check", "--config", str(path))
    assert code == 1
    lines = output.splitlines()
    for problem_path in INVALID_PATHS:
        assert any(line.startswith(f"error: {problem_path}: ") for line in lines), (
            problem_path, output,
        )
    assert len(lines) == len(INVALID_PATHS)
    assert all("(fix: " in line for line in lines)
    assert SECRET not in output
    assert "Config OK." not in output


def test_check_warns_when_inbound_auth_is_closed(tmp_path: Path, env_key: None) -> None:
    path = tmp_path / "open.toml"
    path.write_text(write_valid(tmp_path).read_text().replace(f'client_keys = ["{CLIENT_KEY}"]',
                                                              ""))
    code, output = run_main("check", "--config", str(path))
    assert code == 0
    assert output.startswith("warning: client_keys: ")
    assert "Inbound auth: closed (every request gets 401)" in output


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "config file not found"), ("providers = [", "not valid TOML")],
)
def test_check_unreadable_config(
    tmp_path: Path, env_key: None, content: str | None, expected: str
) -> None:
    path = tmp_path / "broken.toml"
    if content is not None:
        path.write_text(content)
    code, output = run_main("check", "--config", str(path))
    assert code == 1
    assert output.startswith(f"error: {path}: "), output
    assert expected in output


def test_check_as_console_script(tmp_path: Path) -> None:
    valid = run_badgr("check", "--config", str(write_valid(tmp_path)),
                      BADGR_CLI_TEST_BACKUP_KEY=BACKUP_SECRET)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert_valid_report(valid.stdout)
    assert SECRET not in valid.stderr
    assert_clean(valid.stdout, valid.stderr)

    bad = tmp_path / "bad.toml"
    bad.write_text(INVALID_TOML)
    invalid = run_badgr("check", "--config", str(bad))
    assert invalid.returncode == 1
    for problem_path in INVALID_PATHS:
        assert f"error: {problem_path}: " in invalid.stdout
    assert SECRET not in invalid.stdout + invalid.stderr
    assert_clean(invalid.stdout, invalid.stderr)


# --------------------------------------------------------------------------- badgr demo


def test_demo() -> None:
    result = run_badgr("demo", timeout=60)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert_clean(output, result.stderr)
    assert "> failover flaky -> " in output
    assert output.count("ok served by healthy/") == 3
    assert "!! failed" not in output
    assert "Every request succeeded" in output


# --------------------------------------------------------------------------- badgr serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def badgr_serve(config: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``badgr serve`` on a free port, up and answering; stopped (or killed) at the end."""
    for _ in range(3):  # another process may take the free port before badgr binds it
        port = free_port()
        with open(log, "wb") as output:
            proc = subprocess.Popen(
                [badgr_script(), "serve", "--config", str(config), "--port", str(port)],
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                env=child_env(BADGR_CLI_TEST_BACKUP_KEY=BACKUP_SECRET),
            )
        try:
            if _wait_until_up(proc, port):
                yield proc, port
                return
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(STOP_TIMEOUT)
        if "address already in use" not in log.read_text(errors="replace").lower():
            break
    raise AssertionError(f"badgr serve did not start:\n{log.read_text(errors='replace')}")


def _wait_until_up(proc: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1.0,
                                 headers={"authorization": f"Bearer {CLIENT_KEY}"})
            return response.status_code == 200
        time.sleep(0.05)
    return False


def test_serve(tmp_path: Path) -> None:
    primary = SimulatedProvider("primary")
    log = tmp_path / "serve.log"
    with SimulatedServer(primary) as upstream:
        config = write_valid(tmp_path, upstream.base_url, upstream.base_url)
        with badgr_serve(config, log) as (proc, port):
            with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=CLIENT_KEY,
                               max_retries=0, timeout=10) as client:
                raw = client.chat.completions.with_raw_response.create(
                    model="chat", messages=MESSAGES
                )
            assert raw.parse().choices[0].message.content == primary.reply
            assert raw.headers["x-badgr-provider"] == "primary"
            assert primary.requests[0].headers["authorization"] == f"Bearer {SECRET}"

            proc.send_signal(signal.SIGINT)
            assert proc.wait(STOP_TIMEOUT) == 0
    output = log.read_text(errors="replace")
    assert "Application shutdown complete" in output
    assert_clean(output)
    assert SECRET not in output and BACKUP_SECRET not in output


# --------------------------------------------------------------------------- badgr status


@pytest.fixture(scope="module")
def gateway_with_cooldown() -> Iterator[str]:
    """A badgr endpoint after two requests: one provider answered 402 (a provider cooldown),
    another 429 with Retry-After (a cooldown of one of its models)."""
    credits = SimulatedProvider("credits", fault="402")
    limited = SimulatedProvider("limited", fault="429:retry-after=30")
    backup = SimulatedProvider("backup")
    with contextlib.ExitStack() as stack:
        urls = {p.name: stack.enter_context(SimulatedServer(p)).base_url
                for p in (credits, limited, backup)}
        config = {
            "providers": {
                name: {"kind": "openai", "base_url": url, "api_key": SECRET}
                for name, url in urls.items()
            },
            "models": {
                "chat": ["credits/sim-small", "backup/sim-small"],
                "fast": ["limited/sim-large", "backup/sim-small"],
            },
            "client_keys": [CLIENT_KEY],
        }
        gateway = stack.enter_context(SimulatedServer(BadgrApp(config)))
        client = stack.enter_context(openai.OpenAI(
            base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=10
        ))
        for model in ("chat", "fast"):
            raw = client.chat.completions.with_raw_response.create(model=model,
                                                                   messages=MESSAGES)
            assert raw.headers["x-badgr-provider"] == "backup"
        assert [r.fault for r in credits.requests] == ["402"]
        assert [r.fault for r in limited.requests] == ["429:retry-after=30"]
        yield gateway.base_url


def test_status_shows_the_provider_cooling_down(
    gateway_with_cooldown: str, env_key: None
) -> None:
    code, output = run_main("status", "--url", gateway_with_cooldown, "--key", CLIENT_KEY)
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].split() == ["provider", "/", "model", "status", "state", "reason", "retry",
                                "in", "success", "ttfb", "p50/p95", "served", "last", "error",
                                "official"]
    rows = [line.split() for line in lines[1:]]
    # every configured target is listed under its provider, used or not
    assert [row[0] for row in rows] == ["credits", "sim-small", "limited", "sim-large",
                                        "backup", "sim-small"]
    by_name = {row[0]: row[1:] for row in rows}  # the last sim-small: backup's
    assert by_name["credits"][:3] == ["down", "cooling_down", "quota_exhausted"]
    assert re.fullmatch(r"\d+s", by_name["credits"][3])
    assert by_name["backup"][:4] == ["up", "available", "-", "-"]
    # a 429 puts one model of the provider on cooldown, not the provider
    assert by_name["limited"][1:4] == ["available", "-", "-"]
    assert by_name["sim-large"][:3] == ["down", "cooling_down", "rate_limited"]
    assert 28 <= int(by_name["sim-large"][3].removesuffix("s")) <= 30
    assert lines[4].startswith("  sim-large ")  # indented under its provider
    # the model that served both requests: its success rate, time to first byte, count
    small = by_name["sim-small"]
    assert small[:2] == ["up", "available"] and small[4] == "100.0%" and small[6] == "ms"
    assert small[7] == "2"


def test_status_reads_the_key_from_the_environment(
    gateway_with_cooldown: str, env_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BADGR_CLIENT_KEY", CLIENT_KEY)
    code, output = run_main("status", "--url", gateway_with_cooldown + "/")
    assert code == 0, output
    assert "cooling_down" in output


def test_status_with_a_wrong_key(gateway_with_cooldown: str, env_key: None) -> None:
    code, output = run_main("status", "--url", gateway_with_cooldown, "--key", "wrong")
    assert code == 1
    assert output.startswith(f"Could not read {gateway_with_cooldown}/status: ")
    assert "401" in output


def test_status_against_a_closed_port(env_key: None) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    code, output = run_main("status", "--url", url, "--key", CLIENT_KEY)
    assert code == 1
    assert output.startswith(f"Could not read {url}/status: ")
    assert "refused" in output.lower()

    result = run_badgr("status", "--url", url, "--key", CLIENT_KEY)
    assert result.returncode == 1
    assert result.stdout.startswith(f"Could not read {url}/status: ")
    assert_clean(result.stdout, result.stderr)
