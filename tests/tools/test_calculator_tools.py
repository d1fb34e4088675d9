"""The calculator tools through the real HTTP app: {"result": value} answers and plain-language tool errors."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support import legacy_headers, parse_mcp_response, rpc_body
from tools.calculator import MAX_NUMBERS

SCOPES = "read:notes write:notes use:calculator"
CALCULATOR_TOOLS = ["add_numbers", "subtract_numbers", "multiply_numbers", "divide_numbers", "calculate_sum"]
BINARY_TOOLS = CALCULATOR_TOOLS[:4]


@pytest.fixture
def token(signer) -> str:
    return signer.token(sub="alice", scope=SCOPES)


def result_of(client: TestClient, token: str, body: dict[str, Any] | str) -> dict[str, Any]:
    """POST one tools/call (a dict, or a hand-written JSON string); a 200 with a JSON-RPC result."""
    if isinstance(body, str):
        response = client.post("/mcp", content=body.encode(), headers=legacy_headers(token))
    else:
        response = client.post("/mcp", json=body, headers=legacy_headers(token))
    assert response.status_code == 200, response.text[:500]
    message = parse_mcp_response(response)
    assert "error" not in message, message
    return message["result"]


def call(client: TestClient, token: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return result_of(client, token, rpc_body("tools/call", {"name": name, "arguments": arguments}))


def answer(client: TestClient, token: str, name: str, **arguments: Any) -> float:
    result = call(client, token, name, arguments)
    assert not result["isError"], result
    assert set(result["structuredContent"]) == {"result"}
    value = result["structuredContent"]["result"]
    assert result["content"] == [{"type": "text", "text": json.dumps(value)}]
    return value


def error_text(result: dict[str, Any], name: str) -> str:
    assert result["isError"], result
    assert result.get("structuredContent") is None
    [content] = result["content"]
    prefix = f"Error executing tool {name}: "
    assert content["text"].startswith(prefix), content["text"]
    assert "Traceback" not in content["text"]
    assert 'File "' not in content["text"]
    return content["text"].removeprefix(prefix)


def refused(client: TestClient, token: str, name: str, **arguments: Any) -> str:
    return error_text(call(client, token, name, arguments), name)


def raw_call(name: str, arguments_json: str) -> str:
    """A tools/call body written by hand, so it can carry what Python's json writes but JSON forbids."""
    return f'{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{name}","arguments":{arguments_json}}}}}'


# --- results ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("add_numbers", {"a": 2, "b": 3}, 5.0),
        ("add_numbers", {"a": 0.1, "b": 0.2}, 0.1 + 0.2),
        ("add_numbers", {"a": -1.5, "b": 1.5}, 0.0),
        ("subtract_numbers", {"a": 10, "b": 4.5}, 5.5),
        ("subtract_numbers", {"a": 3, "b": 5}, -2.0),
        ("multiply_numbers", {"a": 6, "b": 7}, 42.0),
        ("multiply_numbers", {"a": -2.5, "b": 4}, -10.0),
        ("divide_numbers", {"a": 7, "b": 2}, 3.5),
        ("divide_numbers", {"a": 1, "b": 3}, 1 / 3),
        ("divide_numbers", {"a": 0, "b": -5}, -0.0),
        ("calculate_sum", {"numbers": [1, 2, 3.5]}, 6.5),
        ("calculate_sum", {"numbers": [0.1] * 10}, 1.0),  # exactly rounded, not 0.9999999999999999
        ("calculate_sum", {"numbers": [1e308, 1e308, -1e308]}, 1e308),  # no spurious overflow midway
        ("calculate_sum", {"numbers": []}, 0.0),
    ],
)
def test_results_are_structured(client, token, name, arguments, expected):
    assert answer(client, token, name, **arguments) == expected


def test_the_most_numbers_allowed_still_add_up(client, token):
    assert answer(client, token, "calculate_sum", numbers=[0.5] * MAX_NUMBERS) == MAX_NUMBERS / 2


def test_tools_declare_a_numeric_result_schema(client, token):
    response = client.post("/mcp", json=rpc_body("tools/list"), headers=legacy_headers(token))
    assert response.status_code == 200
    tools = {tool["name"]: tool for tool in parse_mcp_response(response)["result"]["tools"]}
    for name in CALCULATOR_TOOLS:
        schema = tools[name]["outputSchema"]
        assert schema["properties"]["result"]["type"] == "number"
        assert schema["required"] == ["result"]
        assert "use:calculator" in tools[name]["description"]
    for name in BINARY_TOOLS:
        inputs = tools[name]["inputSchema"]
        assert inputs["required"] == ["a", "b"]
        assert {inputs["properties"][field]["type"] for field in ("a", "b")} == {"number"}
    assert tools["calculate_sum"]["inputSchema"]["properties"]["numbers"]["items"] == {"type": "number"}


def test_get_me_still_works_alongside_the_calculator(client, token):
    assert answer(client, token, "add_numbers", a=1, b=1) == 2.0
    response = client.post(
        "/mcp", json=rpc_body("tools/call", {"name": "get_me", "arguments": {}}), headers=legacy_headers(token)
    )
    identity = parse_mcp_response(response)["result"]["structuredContent"]
    assert identity["user_id"] == "alice"
    assert "use:calculator" in identity["scopes"]


# --- errors a user understands ------------------------------------------------------------------


@pytest.mark.parametrize("zero", [0, 0.0, -0.0])
@pytest.mark.parametrize("a", [1, 0, -3.5])
def test_division_by_zero(client, token, a, zero):
    assert refused(client, token, "divide_numbers", a=a, b=zero) == "cannot divide by zero"


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("multiply_numbers", {"a": 1e308, "b": 10}),
        ("add_numbers", {"a": 1.7e308, "b": 1.7e308}),
        ("subtract_numbers", {"a": -1.7e308, "b": 1.7e308}),
        ("divide_numbers", {"a": 1e308, "b": 1e-308}),
        ("calculate_sum", {"numbers": [1.7e308, 1.7e308]}),
    ],
)
def test_overflow_is_a_clear_error(client, token, name, arguments):
    assert refused(client, token, name, **arguments) == "result is too large to represent"


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
@pytest.mark.parametrize("name", BINARY_TOOLS)
def test_non_finite_operands_are_refused(client, token, name, literal):
    first = result_of(client, token, raw_call(name, f'{{"a":{literal},"b":1}}'))
    assert error_text(first, name) == "a must be a finite number"
    second = result_of(client, token, raw_call(name, f'{{"a":1,"b":{literal}}}'))
    assert error_text(second, name) == "b must be a finite number"


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_list_items_are_refused(client, token, literal):
    result = result_of(client, token, raw_call("calculate_sum", f'{{"numbers":[1,2,{literal}]}}'))
    assert error_text(result, "calculate_sum") == "numbers[2] must be a finite number"


def test_a_million_numbers_is_a_clear_size_error_not_a_413_or_a_hang(client, token):
    body = raw_call("calculate_sum", '{"numbers":[' + ",".join(["1"] * 1_000_000) + "]}")
    assert len(body) < 4 * 1024 * 1024  # under the default MCP_MAX_BODY_BYTES
    started = time.monotonic()
    result = result_of(client, token, body)
    assert time.monotonic() - started < 30
    assert error_text(result, "calculate_sum") == f"at most {MAX_NUMBERS} numbers can be added, got 1000000"


def test_one_number_over_the_limit_is_refused(client, token):
    message = refused(client, token, "calculate_sum", numbers=[1] * (MAX_NUMBERS + 1))
    assert message == f"at most {MAX_NUMBERS} numbers can be added, got {MAX_NUMBERS + 1}"


def test_a_body_over_the_size_limit_is_a_413_not_a_500(client, token):
    body = raw_call("calculate_sum", '{"numbers":[' + ",".join(["0.123456789"] * 500_000) + "]}")
    assert len(body) > 4 * 1024 * 1024
    response = client.post("/mcp", content=body.encode(), headers=legacy_headers(token))
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


@pytest.mark.parametrize("bad", [True, False, "1", "2.5", "abc", "", None, [1], {"x": 1}])
@pytest.mark.parametrize("name", BINARY_TOOLS)
def test_non_numbers_are_refused_without_a_traceback(client, token, caplog, name, bad):
    caplog.set_level(logging.DEBUG)
    assert "a\n" in refused(client, token, name, a=bad, b=1)
    assert "b\n" in refused(client, token, name, a=1, b=bad)
    assert all(record.levelno < logging.ERROR and record.exc_info is None for record in caplog.records)


@pytest.mark.parametrize(
    "numbers",
    [[True], [1, False], ["1"], [1, "two"], [None], [[1]], "1, 2", 5, None, {"a": 1}],
    ids=["true", "false", "digit-string", "word", "null", "nested", "csv-string", "number", "null-list", "object"],
)
def test_calculate_sum_refuses_anything_but_a_list_of_numbers(client, token, caplog, numbers):
    caplog.set_level(logging.DEBUG)
    assert "numbers" in refused(client, token, "calculate_sum", numbers=numbers)
    assert all(record.levelno < logging.ERROR and record.exc_info is None for record in caplog.records)


@pytest.mark.parametrize("arguments", [{}, {"a": 1}, {"b": 1}])
@pytest.mark.parametrize("name", BINARY_TOOLS)
def test_missing_operands_are_refused(client, token, name, arguments):
    assert "Field required" in refused(client, token, name, **arguments)


def test_integers_beyond_float_range_are_refused(client, token):
    result = result_of(client, token, raw_call("add_numbers", '{"a":' + "9" * 400 + ',"b":1}'))
    assert "a\n" in error_text(result, "add_numbers")
