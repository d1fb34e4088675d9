"""Calculator arithmetic: pure functions over finite floats, failing with messages a user understands."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

MAX_NUMBERS = 10_000

# 2**14 > MAX_NUMBERS, so partial sums of values scaled down by this many powers of two cannot overflow.
_FSUM_SCALE = 14


class CalculatorError(ValueError):
    """An input or result the calculator cannot handle; str(exc) is meant for the user."""


def _operand(value: object, name: str) -> float:
    # bool is an int subclass, but true/false is never meant as a number here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalculatorError(f"{name} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise CalculatorError(f"{name} is too large: it must be a finite number") from None
    if not math.isfinite(number):
        raise CalculatorError(f"{name} must be a finite number")
    return number


def _result(value: float) -> float:
    if not math.isfinite(value):
        raise CalculatorError("result is too large to represent")
    return value


def _binary(a: float, b: float, operation: Callable[[float, float], float]) -> float:
    # Float arithmetic on finite operands overflows to inf rather than raising, so _result catches it.
    return _result(operation(_operand(a, "a"), _operand(b, "b")))


def add(a: float, b: float) -> float:
    return _binary(a, b, lambda x, y: x + y)


def subtract(a: float, b: float) -> float:
    return _binary(a, b, lambda x, y: x - y)


def multiply(a: float, b: float) -> float:
    return _binary(a, b, lambda x, y: x * y)


def divide(a: float, b: float) -> float:
    x, y = _operand(a, "a"), _operand(b, "b")
    if y == 0:
        raise CalculatorError("cannot divide by zero")
    return _result(x / y)


def _exact_sum(values: list[float]) -> float:
    try:
        return math.fsum(values)
    except OverflowError:
        # fsum gives up when a partial sum overflows even if the exact total fits (1e308 + 1e308 - 1e308).
        pass
    try:
        scaled = math.fsum(math.ldexp(value, -_FSUM_SCALE) for value in values)
        return math.ldexp(scaled, _FSUM_SCALE)
    except OverflowError:
        raise CalculatorError("result is too large to represent") from None


def total(numbers: Sequence[float]) -> float:
    """The correctly rounded sum of at most MAX_NUMBERS finite numbers; 0.0 for none."""
    if not isinstance(numbers, Sequence) or isinstance(numbers, str | bytes | bytearray):
        raise CalculatorError("numbers must be a list of numbers")
    if len(numbers) > MAX_NUMBERS:
        raise CalculatorError(f"at most {MAX_NUMBERS} numbers can be added, got {len(numbers)}")
    values = [_operand(value, f"numbers[{index}]") for index, value in enumerate(numbers)]
    return _result(_exact_sum(values))
