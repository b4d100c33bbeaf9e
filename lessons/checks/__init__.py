"""Checkers for the lessons' exercises: call one with your answer, and it says ``exercise K: ok`` or
explains what is off.

``lessons/checks/lesson_NN.py`` holds lesson NN's checkers, each built from the helpers here. A
checker raises ``AssertionError`` with a hint when an answer is wrong, so a student sees at once what to
look at; the worked solutions in ``lessons/solutions/`` call the same checkers (``tests/test_lessons.py``
runs them).
"""

import numpy as np


def ok(exercise: int, what: str) -> None:
    """Report a passed check (the line ``tests/test_lessons.py`` looks for)."""
    print(f"exercise {exercise}: ok ({what})")


def expect(condition: bool, exercise: int, hint: str) -> None:
    """``AssertionError`` naming the exercise and ``hint`` unless ``condition``."""
    if not condition:
        raise AssertionError(f"exercise {exercise}: not yet: {hint}")


def expect_close(value, target, exercise: int, what: str, *, rtol: float = 1e-6, atol: float = 0.0) -> None:
    """``value`` must equal ``target`` to the tolerance (arrays or numbers)."""
    value, target = np.asarray(value, dtype=np.float64), np.asarray(target, dtype=np.float64)
    expect(value.shape == target.shape, exercise, f"{what}: shape {value.shape}, expected {target.shape}")
    expect(bool(np.allclose(value, target, rtol=rtol, atol=atol)), exercise,
           f"{what}: got {np.round(value, 6).tolist()}, expected {np.round(target, 6).tolist()}")


def expect_between(value: float, low: float, high: float, exercise: int, what: str) -> None:
    """``value`` must lie in ``[low, high]``."""
    expect(low <= float(value) <= high, exercise, f"{what} is {float(value):.4g}; expected {low:g} to {high:g}")
