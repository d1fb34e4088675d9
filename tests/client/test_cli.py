"""`python -m client` as a real process against `python server.py --dev`, plus its configuration rules."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

from client.cli import main
from client.config import ClientSettings, ConfigError, resolve
from tests.client.dpop_support import BindingIdP, check_proof
from tests.e2e.conftest import PROJECT_ROOT, ServerLauncher, ServerProcess, free_port

WRONG_SECRET = "wrong-secret-4f1c9e"
CLI_TIMEOUT = 60


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    launcher = ServerLauncher(tmp_path_factory.mktemp("cli-server"))
    try:
        yield launcher.start("--dev")
    finally:
        launcher.close()


@pytest.fixture(autouse=True)
def _no_client_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ClientSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(f"{name.upper()}_FILE", raising=False)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m client ARGS` with none of the developer's OAUTH_*/MCP_* variables, in an empty directory."""
    clean = {name: value for name, value in os.environ.items() if not name.upper().startswith(("OAUTH_", "MCP_"))}
    clean.update(PYTHONPATH=str(PROJECT_ROOT), PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def dev_flags(server: ServerProcess) -> list[str]:
    return ["--server-url", server.mcp_url, "--token-url", f"{server.base_url}/dev-issuer/token"]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *, code: int = 1) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# --- against the real dev server ----------------------------------------------------------------------


@pytest.mark.e2e
def test_the_default_command_lists_the_tools(dev_server: ServerProcess, tmp_path: Path) -> None:
    result = run_cli(*dev_flags(dev_server), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert "get_me" in names
    assert "divide_numbers" in names
    assert result.stderr == ""


@pytest.mark.e2e
def test_call_get_me_prints_the_dev_client_identity(dev_server: ServerProcess, tmp_path: Path) -> None:
    result = run_cli("call", "get_me", *dev_flags(dev_server), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    identity = json.loads(result.stdout)
    assert identity["user_id"] == "dev-client"
    assert identity["client_id"] == "dev-client"
    assert identity["issuer"] == f"{dev_server.base_url}/dev-issuer"
    assert identity["token_type"] == "machine"


@pytest.mark.e2e
def test_call_with_arguments_in_the_legacy_era(dev_server: ServerProcess, tmp_path: Path) -> None:
    result = run_cli(
        *dev_flags(dev_server), "--mode", "legacy", "call", "add_numbers", "--args", '{"a": 1, "b": 2}', cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"result": 3}


@pytest.mark.e2e
def test_a_tool_error_is_printed_and_exits_non_zero(dev_server: ServerProcess, tmp_path: Path) -> None:
    result = run_cli("call", "divide_numbers", "--args", '{"a":1,"b":0}', *dev_flags(dev_server), cwd=tmp_path)

    line = assert_one_line_error(result)
    assert "divide_numbers" in line
    assert "divide by zero" in line
    assert result.stdout == ""


@pytest.mark.e2e
def test_an_unknown_tool_is_an_error(dev_server: ServerProcess, tmp_path: Path) -> None:
    result = run_cli("call", "no_such_tool", *dev_flags(dev_server), cwd=tmp_path)

    assert "no_such_tool" in assert_one_line_error(result)


@pytest.mark.e2e
def test_a_wrong_secret_is_one_line_without_the_secret(dev_server: ServerProcess, tmp_path: Path) -> None:
    result = run_cli(*dev_flags(dev_server), cwd=tmp_path, env={"OAUTH_CLIENT_SECRET": WRONG_SECRET})

    line = assert_one_line_error(result)
    assert "rejected client 'dev-client'" in line
    assert "invalid_client" in line
    assert WRONG_SECRET not in result.stdout + result.stderr


@pytest.mark.e2e
def test_the_client_secret_is_read_from_its_file(dev_server: ServerProcess, tmp_path: Path) -> None:
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text("dev-secret\n", encoding="utf-8")
    wrong.write_text(f"{WRONG_SECRET}\n", encoding="utf-8")

    accepted = run_cli("token", *dev_flags(dev_server), cwd=tmp_path, env={"OAUTH_CLIENT_SECRET_FILE": str(right)})
    refused = run_cli(*dev_flags(dev_server), cwd=tmp_path, env={"OAUTH_CLIENT_SECRET_FILE": str(wrong)})

    assert accepted.returncode == 0, accepted.stderr
    assert dev_server.post_mcp(accepted.stdout.strip()).status_code == 200
    assert "rejected client 'dev-client'" in assert_one_line_error(refused)
    assert WRONG_SECRET not in refused.stdout + refused.stderr


def test_an_unreadable_client_secret_file_is_a_usage_error(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    result = run_cli(cwd=tmp_path, env={"OAUTH_CLIENT_SECRET_FILE": str(gone)})

    line = assert_one_line_error(result, code=2)
    assert line == f"error: OAUTH_CLIENT_SECRET_FILE: cannot read {str(gone)!r}: No such file or directory"


@pytest.mark.e2e
def test_a_missing_scope_is_reported_as_the_servers_403(dev_server: ServerProcess, tmp_path: Path) -> None:
    args = ("--scope", "read:notes", "call", "create_note", "--args", '{"title": "t", "content": "c"}')
    result = run_cli(*dev_flags(dev_server), *args, cwd=tmp_path)

    line = assert_one_line_error(result)
    assert "refused the token: HTTP 403 insufficient_scope (required scope: write:notes)" in line


@pytest.mark.e2e
def test_token_prints_a_jwt_the_server_accepts(dev_server: ServerProcess, tmp_path: Path) -> None:
    result = run_cli("token", *dev_flags(dev_server), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"] == "RS256"
    assert claims["client_id"] == "dev-client"
    assert signature
    assert dev_server.post_mcp(token).status_code == 200


@pytest.mark.e2e
def test_dotenv_with_an_issuer_is_read_and_discovery_finds_the_token_endpoint(
    dev_server: ServerProcess, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"MCP_SERVER_URL={dev_server.mcp_url}\n"
        f"OAUTH_ISSUER={dev_server.base_url}/dev-issuer\n"
        "OAUTH_CLIENT_ID=dev-client\n"
        "OAUTH_CLIENT_SECRET=dev-secret\n"
        "OAUTH_TOKEN_AUTH_METHOD=client_secret_post\n"
    )

    result = run_cli("call", "get_me", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["client_id"] == "dev-client"


@pytest.mark.e2e
def test_flags_win_over_the_environment(dev_server: ServerProcess, tmp_path: Path) -> None:
    unused_port = free_port()
    env = {
        "MCP_SERVER_URL": f"http://127.0.0.1:{unused_port}/mcp",
        "OAUTH_TOKEN_URL": f"http://127.0.0.1:{unused_port}/dev-issuer/token",
    }

    result = run_cli(*dev_flags(dev_server), cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stderr
    assert "get_me" in result.stdout


@pytest.mark.e2e
def test_an_unreachable_token_endpoint_is_one_line(tmp_path: Path) -> None:
    unused = f"http://127.0.0.1:{free_port()}"
    result = run_cli("--server-url", f"{unused}/mcp", "--token-url", f"{unused}/dev-issuer/token", cwd=tmp_path)

    line = assert_one_line_error(result)
    assert "is unreachable" in line
    assert "gave up after" in line


def test_bad_json_arguments_are_a_usage_error(tmp_path: Path) -> None:
    # No server needed: the arguments are checked before any network traffic.
    result = run_cli("call", "add_numbers", "--args", "{a: 1}", cwd=tmp_path)

    assert "--args is not valid JSON" in assert_one_line_error(result, code=2)


def test_arguments_must_be_a_json_object(tmp_path: Path) -> None:
    result = run_cli("call", "add_numbers", "--args", "[1, 2]", cwd=tmp_path)

    assert "--args must be a JSON object" in assert_one_line_error(result, code=2)


def test_a_real_idp_without_a_client_id_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("--issuer", "https://tenant.example-idp.com/", cwd=tmp_path)

    assert "OAUTH_CLIENT_ID (--client-id): missing" in assert_one_line_error(result, code=2)


# --- configuration rules ----------------------------------------------------------------------------------


def test_with_nothing_configured_the_cli_targets_make_dev() -> None:
    config = resolve({}, ClientSettings(_env_file=None))

    assert config.server_url == "http://127.0.0.1:8000/mcp"
    assert config.token_url == "http://127.0.0.1:8000/dev-issuer/token"
    assert config.issuer is None
    assert (config.client_id, config.client_secret.get_secret_value()) == ("dev-client", "dev-secret")
    assert config.auth_method == "client_secret_basic"


def test_a_local_server_on_another_port_gets_its_own_dev_issuer() -> None:
    config = resolve({"server_url": "http://127.0.0.1:9100/mcp"}, ClientSettings(_env_file=None))

    assert config.token_url == "http://127.0.0.1:9100/dev-issuer/token"


def test_the_dev_client_is_never_assumed_for_a_real_idp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTH_TOKEN_URL", "https://tenant.auth0.com/oauth/token")

    with pytest.raises(ConfigError, match=r"OAUTH_CLIENT_ID \(--client-id\): missing"):
        resolve({}, ClientSettings(_env_file=None))


def test_a_remote_server_needs_an_explicit_idp() -> None:
    with pytest.raises(ConfigError, match="OAUTH_TOKEN_URL or OAUTH_ISSUER"):
        resolve({"server_url": "https://mcp.example.com/mcp"}, ClientSettings(_env_file=None))


def test_plain_http_to_a_remote_server_is_refused() -> None:
    with pytest.raises(ConfigError, match="MCP_SERVER_URL"):
        resolve({"server_url": "http://mcp.example.com/mcp"}, ClientSettings(_env_file=None))


def test_environment_values_are_used_and_flags_replace_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SERVER_URL", "https://mcp.example.com/mcp")
    monkeypatch.setenv("OAUTH_ISSUER", "https://tenant.auth0.com/")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "env-client")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "env-secret")
    monkeypatch.setenv("OAUTH_TOKEN_AUDIENCE", "https://api.example.com")
    monkeypatch.setenv("OAUTH_SCOPE", "")  # empty counts as unset
    monkeypatch.setenv("OAUTH_TOKEN_AUTH_METHOD", "post")
    settings = ClientSettings(_env_file=None)

    from_env = resolve({}, settings)
    from_flags = resolve({"token_url": "https://idp.example.com/token", "client_id": "flag-client"}, settings)

    assert (from_env.issuer, from_env.token_url, from_env.client_id) == (
        "https://tenant.auth0.com/",
        None,
        "env-client",
    )
    assert from_env.audience == "https://api.example.com"
    assert from_env.scope is None
    assert from_env.auth_method == "client_secret_post"
    assert (from_flags.token_url, from_flags.issuer) == ("https://idp.example.com/token", None)
    assert from_flags.client_id == "flag-client"
    assert from_flags.client_secret.get_secret_value() == "env-secret"
    assert "env-secret" not in repr(from_flags)


def test_an_unknown_auth_method_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="OAUTH_TOKEN_AUTH_METHOD"):
        resolve({"auth_method": "private_key_jwt"}, ClientSettings(_env_file=None))


# --- DPoP (in process; the IdP is respx) ---------------------------------------------------------------

DPOP_TOKEN_URL = "https://idp.example.com/oauth/token"
DPOP_ARGS = ["--token-url", DPOP_TOKEN_URL, "--client-id", "c", "--client-secret", "s-cli-9e1"]


@pytest.mark.parametrize("position", ["before-the-command", "after-the-command", "environment"])
def test_dpop_token_command_gets_a_bound_token(tmp_path: Path, monkeypatch, capsys, position: str) -> None:
    monkeypatch.chdir(tmp_path)
    argv = {
        "before-the-command": ["--dpop", *DPOP_ARGS, "token"],
        "after-the-command": [*DPOP_ARGS, "token", "--dpop"],
        "environment": [*DPOP_ARGS, "token"],
    }[position]
    if position == "environment":
        monkeypatch.setenv("OAUTH_CLIENT_DPOP", "true")
    issuer = BindingIdP(DPOP_TOKEN_URL)

    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(DPOP_TOKEN_URL).mock(side_effect=issuer)
        code = main(argv)

    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.strip() == issuer.issued[0]
    check_proof(route.calls[0].request.headers["DPoP"], "POST", DPOP_TOKEN_URL)


def test_dpop_with_an_idp_that_answers_bearer_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    bearer = httpx.Response(200, json={"access_token": "plain-bearer-tok", "token_type": "Bearer", "expires_in": 60})

    with respx.mock(assert_all_mocked=True) as router:
        router.post(DPOP_TOKEN_URL).mock(return_value=bearer)
        code = main(["--dpop", *DPOP_ARGS, "token"])

    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert "answered the DPoP request with 'Bearer', not a DPoP-bound token" in err
    assert "plain-bearer-tok" not in err
    assert "s-cli-9e1" not in err


def recorded(authorization: str, *challenges: str) -> str | None:
    import asyncio

    import httpx2

    from client.cli import RefusalRecorder

    request = httpx2.Request("POST", "https://mcp.example.com/mcp", headers={"Authorization": authorization})
    headers = [("WWW-Authenticate", challenge) for challenge in challenges]
    recorder = RefusalRecorder()
    asyncio.run(recorder(httpx2.Response(401, headers=headers, request=request)))
    return recorder.describe("https://mcp.example.com/mcp")


def test_a_dpop_request_refused_by_a_server_without_dpop_says_so() -> None:
    bearer_only = 'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'
    assert recorded("DPoP t", bearer_only) == (
        "the MCP server at https://mcp.example.com/mcp refused the token: HTTP 401 (the server offers no DPoP "
        "challenge, so it does not take DPoP tokens: try without --dpop / OAUTH_CLIENT_DPOP)"
    )
    assert recorded("DPoP t", bearer_only, 'DPoP algs="ES256"') == (
        "the MCP server at https://mcp.example.com/mcp refused the token: HTTP 401"
    )
    assert (
        recorded("Bearer t", bearer_only) == "the MCP server at https://mcp.example.com/mcp refused the token: HTTP 401"
    )
