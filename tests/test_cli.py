"""The command line: instant help, one-line errors with exit code 2, configs shipped in the wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

from silkie.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_help_is_instant_and_imports_nothing_heavy():
    code = "import sys, silkie.cli; print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    for argv in (["--help"], ["world", "--help"], ["world", "make", "--help"], ["validate", "--help"]):
        result = subprocess.run([sys.executable, "-m", "silkie.cli", *argv], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: silkie" in result.stdout


def test_bad_usage_exits_2_with_one_line(tmp_path, capsys):
    assert main(["world", "make", "--n", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "silkie: error: --n must be at least 1"
    result = subprocess.run([sys.executable, "-m", "silkie.cli", "world", "make", "--n", "ten", "--out", "x"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid int value: 'ten'" in result.stderr
    assert main(["validate", str(tmp_path / "missing" / "instructions.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_wheel_ships_the_configs_cards_and_mini_pool(tmp_path):
    """configs/, cards/, spaces/ and the trained mini pool must be found after a plain, non-editable install too."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("silkie-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml"))
    assert shipped
    for config in shipped:
        assert f"silkie/resources/{config}" in names
    assert "silkie/resources/cards/dataset_card.md" in names
    assert {"silkie/resources/spaces/app.py", "silkie/resources/spaces/README.md"} <= names  # silkie space --export
    assert "silkie/resources/configs/pipeline/mini.yaml" in names  # silkie run after a plain install
    pool = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "silkie" / "world" / "trained").rglob("*")
                  if p.is_file())
    assert pool and set(pool) <= names  # world:NAME models work after a plain install too
    assert not any(name.startswith("tests/") for name in names)
