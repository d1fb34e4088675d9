"""The calculator tools: thin MCP wrappers over tools.calculator, errors turned into tool errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, StrictFloat

from tools import calculator

# Strict: otherwise pydantic turns true into 1.0 and "2" into 2.0 before the calculator can refuse them.
Number = Annotated[StrictFloat, Field(description="a finite number")]


def _run(operation: Callable[..., float], *args: object) -> float:
    try:
        return operation(*args)
    except calculator.CalculatorError as exc:
        raise ToolError(str(exc)) from None


async def add_numbers(a: Number, b: Number) -> float:
    """Add two numbers: a + b."""
    return _run(calculator.add, a, b)


async def subtract_numbers(a: Number, b: Number) -> float:
    """Subtract b from a: a - b."""
    return _run(calculator.subtract, a, b)


async def multiply_numbers(a: Number, b: Number) -> float:
    """Multiply two numbers: a * b."""
    return _run(calculator.multiply, a, b)


async def divide_numbers(a: Number, b: Annotated[StrictFloat, Field(description="a finite, non-zero number")]) -> float:
    """Divide a by b: a / b."""
    return _run(calculator.divide, a, b)


async def calculate_sum(
    numbers: Annotated[list[StrictFloat], Field(description=f"at most {calculator.MAX_NUMBERS} finite numbers")],
) -> float:
    """Add up a list of numbers (exactly rounded)."""
    return _run(calculator.total, numbers)


CALCULATOR_TOOLS = (add_numbers, subtract_numbers, multiply_numbers, divide_numbers, calculate_sum)
