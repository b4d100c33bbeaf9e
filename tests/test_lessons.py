"""The course in lessons/: every lesson and every worked solution runs (quick mode, phantom data).

Each lesson runs in its own subprocess, the way a student runs it (``python lessons/NN_....py``), from a
foreign working directory, with ``JAXMRI_DATA`` pointing at a folder that does not exist (so the phantom
data are used even where the real set is installed) and ``JAXMRI_LESSON_FIGURES`` inside ``tmp_path``.

The contract every lesson keeps (checked here, so a new lesson needs no entry in this file):

- ``lessons/NN_<topic>.py``, a Jupytext percent script with prose cells, ending in an ``## Exercises``
  cell whose numbered items are the exercises;
- it writes exactly the figures whose names (``"NN_<what>.png"``) appear in its source, nothing else;
- ``lessons/solutions/NN_<topic>.py`` works every exercise and prints ``exercise K: ok ...`` for each
  (the checkers in ``lessons/checks/`` print it), writes no figures, and exits 0;
- it imports from ``jaxmri`` and defines no class (models live in the library); ``nnx.jit`` /
  ``nnx.grad`` and friends are never used, and ``jax.jit`` / ``jax.grad`` / ``jax.vmap`` only on small
  teaching functions defined in the lesson that update no parameters (never a model, loss or step).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LESSONS_DIR = PROJECT_ROOT / "lessons"
SOLUTIONS_DIR = LESSONS_DIR / "solutions"
LESSONS = sorted(p.name for p in LESSONS_DIR.glob("[0-9][0-9]_*.py"))
MAX_FIGURE_BYTES = 150_000
TRANSFORMS = {"jit", "grad", "value_and_grad", "vmap", "pmap"}
# What a transformed teaching function must not touch: that would make it a training step.
STEP_WORDS = {"optimizer", "apply_updates", "Optimizer", "train_step", "plain_train_step"}
MAX_TEACHING_LINES = 15
_RUNS: dict[str, tuple[subprocess.CompletedProcess, float, Path]] = {}


def run_script(path: Path, workdir: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAXMRI_LESSON_QUICK": "1", "JAXMRI_DATA": str(data_dir),
           "JAXMRI_LESSON_FIGURES": str(workdir / "figures"), "MPLBACKEND": "Agg"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, str(path)], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)


def lesson_run(lesson: str, tmp_path_factory) -> tuple[subprocess.CompletedProcess, float, Path]:
    """The quick-mode run of ``lesson`` on phantoms (once per test session: several tests read it)."""
    if lesson not in _RUNS:
        workdir = tmp_path_factory.mktemp(lesson.removesuffix(".py"))
        start = time.perf_counter()
        result = run_script(LESSONS_DIR / lesson, workdir, workdir / "no-data-here")
        _RUNS[lesson] = (result, time.perf_counter() - start, workdir / "figures")
    return _RUNS[lesson]


def declared_figures(lesson: str) -> set[str]:
    return set(re.findall(r"[\"'](\d\d_[A-Za-z0-9_]+\.png)[\"']", (LESSONS_DIR / lesson).read_text()))


def exercise_numbers(lesson: str) -> list[int]:
    cell = (LESSONS_DIR / lesson).read_text().rsplit("## Exercises", 1)[-1]
    return [int(n) for n in re.findall(r"^# (\d+)\. ", cell, flags=re.M)]


def test_the_course_has_at_least_ten_lessons_numbered_from_zero():
    numbers = [int(name[:2]) for name in LESSONS]
    assert numbers == list(range(len(numbers))) and len(numbers) >= 10, LESSONS
    listed = (LESSONS_DIR / "README.md").read_text()
    assert all(name in listed for name in LESSONS), "lessons/README.md must list every lesson"


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_on_phantoms_and_writes_its_figures(lesson, tmp_path_factory):
    result, seconds, figures = lesson_run(lesson, tmp_path_factory)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert result.returncode == 0, f"{lesson} exited with {result.returncode} after {seconds:.0f} s:\n{output}"
    assert "Data: PHANTOM DATA" in result.stdout, f"{lesson} did not say which data it used:\n{result.stdout[:500]}"
    expected = declared_figures(lesson)
    assert expected and all(name[:2] == lesson[:2] for name in expected), f"{lesson} figures: {sorted(expected)}"
    written = {p.name for p in figures.iterdir()} if figures.is_dir() else set()
    assert written == expected, f"{lesson} wrote {sorted(written)}, expected {sorted(expected)}"
    for name in written:
        size = (figures / name).stat().st_size
        assert 1_000 < size < MAX_FIGURE_BYTES, f"{name} is {size} bytes; figures must be under {MAX_FIGURE_BYTES}"
    print(f"{lesson}: {seconds:.1f} s in quick mode, figures {sorted(written)}")


@pytest.mark.parametrize("lesson", LESSONS)
def test_solution_works_every_exercise(lesson, tmp_path):
    solution = SOLUTIONS_DIR / lesson
    assert solution.is_file(), f"{lesson} has no worked solutions in lessons/solutions/{lesson}"
    start = time.perf_counter()
    result = run_script(solution, tmp_path, tmp_path / "no-data-here")
    seconds = time.perf_counter() - start
    assert result.returncode == 0, f"{solution.name} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    numbers = exercise_numbers(lesson)
    assert numbers, f"{lesson}: its Exercises cell has no numbered exercises"
    for n in numbers:
        assert re.search(rf"^exercise {n}: ok", result.stdout, flags=re.M), \
            f"solutions/{lesson} did not check exercise {n}:\n{result.stdout[-3000:]}"
    figures = tmp_path / "figures"
    assert not (figures.is_dir() and any(figures.iterdir())), "solutions print their answers; they write no figures"
    print(f"solutions/{lesson}: {seconds:.1f} s")


def test_lesson_two_trains_exactly_what_the_command_trains(tmp_path_factory, tmp_path):
    """Lesson 2 trains with the library's ``fit``; ``python -m jaxmri.train`` with the same settings on the
    same images prints the same per-epoch numbers (to every printed digit)."""
    from jaxmri.data.phantom import write_phantom_dataset
    from jaxmri.train import main as train

    result, _, _ = lesson_run("02_small_cnn_train_step.py", tmp_path_factory)
    assert result.returncode == 0, result.stderr[-3000:]
    pattern = r"^epoch +\d+/(\d+) +loss [\d.]+ +train [\d.]+ +val [\d.]+ +test [\d.]+"
    lines = [m.group(0) for m in re.finditer(pattern, result.stdout, flags=re.M)]
    epochs = int(re.match(pattern, lines[0]).group(1))
    lesson = lines[:epochs]  # the lesson's first run: Adam with Table 3's settings
    data = write_phantom_dataset(tmp_path / "phantom", 60, 40, seed=0)  # what lesson_data writes
    assert train(["classify", "--arch", "cnn", "--data", str(data), "--image-size", "64", "--epochs", str(epochs),
                  "--batch-size", "16", "--lr", "0.001", "--weight-decay", "0.0004", "--seed", "0",
                  "--out", str(tmp_path / "run")]) == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]
    command = [f"epoch {r['epoch']:3d}/{epochs}  loss {r['train_loss']:.4f}  train {r['train_accuracy']:.3f}  "
               f"val {r['val_accuracy']:.3f}  test {r['test_accuracy']:.3f}" for r in history]
    assert lesson == command


def test_a_checker_refuses_a_wrong_answer():
    sys.path.insert(0, str(LESSONS_DIR))
    try:
        from checks.lesson_00 import check_trace_count
    finally:
        sys.path.remove(str(LESSONS_DIR))
    with pytest.raises(AssertionError, match="exercise 2: not yet"):
        check_trace_count(5)


@pytest.mark.realdata
def test_first_lesson_uses_the_real_data_when_present(real_data_dir, tmp_path):
    result = run_script(LESSONS_DIR / "01_data_pipeline.py", tmp_path, real_data_dir)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Data: REAL KAGGLE DATA" in result.stdout
    assert "253 images" in result.stdout


def _transformed(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name if name in TRANSFORMS else None


def _owner(node: ast.AST) -> str:
    return node.value.id if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) else ""


def teaching_function_problems(source: str) -> list[str]:
    """Every use of a JAX transformation that is not on a small, parameter-free teaching function."""
    tree = ast.parse(source)
    defs = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    problems = []

    def check_target(target: ast.AST, line: int, how: str) -> None:
        if isinstance(target, ast.Call) and _transformed(target) and target.args:  # jit(vmap(f)): look at f
            return check_target(target.args[0], line, how)
        fn = defs.get(target.id) if isinstance(target, ast.Name) else target
        if not isinstance(fn, (ast.FunctionDef, ast.Lambda)):
            problems.append(f"line {line}: {how} of something not defined in the lesson ({ast.unparse(target)[:40]})")
            return
        lines = fn.end_lineno - fn.lineno + 1
        words = {n.attr if isinstance(n, ast.Attribute) else n.id
                 for n in ast.walk(fn) if isinstance(n, (ast.Attribute, ast.Name))}
        if lines > MAX_TEACHING_LINES:
            problems.append(f"line {line}: {how} of a {lines}-line function; teaching functions stay small")
        if words & STEP_WORDS:
            problems.append(f"line {line}: {how} of a function that updates parameters ({sorted(words & STEP_WORDS)})")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in TRANSFORMS and _owner(node) == "nnx":
            problems.append(f"line {node.lineno}: nnx.{node.attr}: the library's steps are the only NNX transforms")
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                call = dec if isinstance(dec, ast.Call) else None
                name = _transformed(call) if call else (dec.attr if isinstance(dec, ast.Attribute) else
                                                          getattr(dec, "id", None))
                if name in TRANSFORMS:
                    check_target(node, node.lineno, f"@{name}")
        if isinstance(node, ast.Call) and _transformed(node):
            if node.args:
                check_target(node.args[0], node.lineno, _transformed(node))
            elif not any(isinstance(p, ast.FunctionDef) and node in p.decorator_list for p in ast.walk(tree)):
                problems.append(f"line {node.lineno}: {_transformed(node)}() without a function")
    return problems


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_is_prose_plus_library_calls(lesson):
    source = (LESSONS_DIR / lesson).read_text()
    assert source.count("# %% [markdown]") >= 5, f"{lesson}: expected Jupytext percent cells with prose"
    assert "## Exercises" in source.rsplit("# %% [markdown]", 1)[-1], f"{lesson}: must end with an Exercises cell"
    tree = ast.parse(source)
    classes = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert not classes, f"{lesson} defines classes {classes}; models belong in jaxmri/"
    problems = teaching_function_problems(source)
    assert not problems, f"{lesson}: " + "; ".join(problems)
    imported = {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert "jaxmri" in imported, f"{lesson} imports nothing from jaxmri"


@pytest.mark.parametrize("source, words", [
    ("from flax import nnx\nstep = nnx.jit(lambda m: m)\n", "nnx.jit"),
    ("import jax\nfrom jaxmri.training.classify_steps import plain_train_step\nf = jax.jit(plain_train_step)\n",
     "not defined in the lesson"),
    ("import jax\ndef step(model, optimizer, g):\n    optimizer.update(model, g)\nf = jax.jit(step)\n",
     "updates parameters"),
    ("import jax\n@jax.jit\ndef big(x):\n" + "    x = x + 1\n" * 20 + "    return x\n", "teaching functions stay small"),
])
def test_the_lesson_check_catches_a_step_written_in_a_lesson(source, words):
    assert any(words in p for p in teaching_function_problems(source)), teaching_function_problems(source)


def test_small_teaching_functions_may_be_transformed():
    source = ("import jax\nimport jax.numpy as jnp\ndef f(x):\n    return jnp.sum(x ** 2)\n"
              "g = jax.grad(f)\nh = jax.jit(jax.vmap(lambda x: x * 2))\n@jax.jit\ndef k(x):\n    return x\n")
    assert teaching_function_problems(source) == []
