"""The calculator: exact results for finite numbers, and a plain-language error for everything else."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from tools.calculator import MAX_NUMBERS, CalculatorError, add, divide, multiply, subtract, total

BINARY = [add, subtract, multiply, divide]


@pytest.mark.parametrize(
    ("operation", "a", "b", "expected"),
    [
        (add, 2, 3, 5.0),
        (add, 0.1, 0.2, 0.1 + 0.2),
        (add, -1.5, 1.5, 0.0),
        (add, 10**20, 1, 1e20),
        (subtract, 10, 4, 6.0),
        (subtract, -3, -3, 0.0),
        (subtract, 1e308, -0.0, 1e308),
        (multiply, 6, 7, 42.0),
        (multiply, -2.5, 4, -10.0),
        (multiply, 1e-200, 1e-200, 0.0),  # underflow to zero is a fine answer
        (divide, 1, 4, 0.25),
        (divide, -9, 3, -3.0),
        (divide, 0, 5, 0.0),
        (divide, 1, 3, 1 / 3),
    ],
)
def test_binary_operations(operation: Callable[[float, float], float], a: float, b: float, expected: float) -> None:
    result = operation(a, b)
    assert type(result) is float
    assert result == expected


@pytest.mark.parametrize("zero", [0, 0.0, -0.0])
def test_division_by_zero(zero: float) -> None:
    with pytest.raises(CalculatorError, match=r"^cannot divide by zero$"):
        divide(1, zero)


@pytest.mark.parametrize("operation", BINARY)
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_inputs(operation: Callable[[float, float], float], bad: float) -> None:
    with pytest.raises(CalculatorError, match=r"^a must be a finite number$"):
        operation(bad, 1)
    with pytest.raises(CalculatorError, match=r"^b must be a finite number$"):
        operation(1, bad)


@pytest.mark.parametrize("operation", BINARY)
@pytest.mark.parametrize("bad", [True, False, "1", None, [1], 1j])
def test_non_numbers_and_booleans_are_rejected(operation: Callable[[float, float], float], bad: object) -> None:
    with pytest.raises(CalculatorError, match=r"^a must be a number$"):
        operation(bad, 1)  # type: ignore[arg-type]
    with pytest.raises(CalculatorError, match=r"^b must be a number$"):
        operation(1, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("operation", BINARY)
@pytest.mark.parametrize("huge", [10**400, -(10**400)])
def test_integers_beyond_float_range_are_rejected_cleanly(
    operation: Callable[[float, float], float], huge: int
) -> None:
    with pytest.raises(CalculatorError, match=r"^a is too large: it must be a finite number$") as caught:
        operation(huge, 1)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(CalculatorError, match=r"^b is too large"):
        operation(1, huge)


@pytest.mark.parametrize(
    ("operation", "a", "b"),
    [
        (add, 1e308, 1e308),
        (subtract, -1e308, 1e308),
        (multiply, 1e308, 10),
        (multiply, -1e200, 1e200),
        (divide, 1e308, 1e-308),
    ],
)
def test_overflowing_results(operation: Callable[[float, float], float], a: float, b: float) -> None:
    with pytest.raises(CalculatorError, match=r"^result is too large to represent$"):
        operation(a, b)


def test_calculator_error_is_a_value_error() -> None:
    assert issubclass(CalculatorError, ValueError)


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ([], 0.0),
        ((), 0.0),
        ([7], 7.0),
        ([1, 2, 3.5], 6.5),
        ([0.1] * 10, 1.0),  # fsum: a naive sum gives 0.9999999999999999
        ([1e100, 1.0, -1e100], 1.0),
        ([1e308, 1e308, -1e308], 1e308),  # a partial sum overflows although the total fits
        ([-1e308, -1e308, 1e308, 5.0], -1e308),
        ([10**20, -(10**20), 1], 1.0),
        ([1.0] * MAX_NUMBERS, float(MAX_NUMBERS)),
    ],
)
def test_total(numbers: list[float], expected: float) -> None:
    result = total(numbers)
    assert type(result) is float
    assert result == expected


def test_total_is_exact_where_a_naive_sum_is_not() -> None:
    numbers = [0.1] * 10
    assert sum(numbers) != 1.0
    assert total(numbers) == 1.0


def test_total_of_too_many_numbers() -> None:
    with pytest.raises(CalculatorError, match=rf"^at most {MAX_NUMBERS} numbers can be added, got {MAX_NUMBERS + 1}$"):
        total([1.0] * (MAX_NUMBERS + 1))
    with pytest.raises(CalculatorError, match="at most 10000 numbers"):
        total([0] * 20_000)


@pytest.mark.parametrize("numbers", [[1e308, 1e308], [-1e308] * 3, [1e308] * 4 + [-1e308]])
def test_total_overflow(numbers: list[float]) -> None:
    with pytest.raises(CalculatorError, match=r"^result is too large to represent$"):
        total(numbers)


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ([1, math.inf], r"^numbers\[1\] must be a finite number$"),
        ([math.nan], r"^numbers\[0\] must be a finite number$"),
        ([1, 2, True], r"^numbers\[2\] must be a number$"),
        ([1, "2"], r"^numbers\[1\] must be a number$"),
        ([None], r"^numbers\[0\] must be a number$"),
        ([1, 10**400], r"^numbers\[1\] is too large: it must be a finite number$"),
    ],
)
def test_total_names_the_bad_item(numbers: list[object], message: str) -> None:
    with pytest.raises(CalculatorError, match=message):
        total(numbers)  # type: ignore[arg-type]


@pytest.mark.parametrize("numbers", ["123", b"12", {1, 2}, 5, None, iter([1, 2])])
def test_total_needs_a_list(numbers: object) -> None:
    with pytest.raises(CalculatorError, match=r"^numbers must be a list of numbers$"):
        total(numbers)  # type: ignore[arg-type]
