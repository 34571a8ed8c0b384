"""Every command line in the README parses with the real parser, and every `--help` works.

The CLI is to be generated from config dataclasses; these tests keep the README's spellings working
through that. They parse only: nothing runs.

What is a command line:
- each command of a fenced ```bash block, with comments (from a `#` that starts a word) stripped,
  `\\` continuations joined, `&&`, `||`, `;` and `|` separating commands, and leading VAR=VALUE
  assignments dropped;
- the first cell of a table row when the cell is one code span and starts with a program
  (the Commands table).
What is not, and is skipped by rule:
- a bash command holding the word `...` or `…` (`silkie annotate ... --budget-usd 200`: "the flags
  shown above" plus these);
- a table cell that is a synopsis: it holds `[` (optional parts), `|` (alternatives; `\\|` in
  markdown), `…` or `...` (repetition), or a one-letter capital metavariable (N, S, K, P: a number,
  which argparse would reject). Path metavariables (RUN, DIR, FILE) stay: argparse takes any string.
  Synopses still pin their spellings: every `--flag` in a row of the Commands table must be an
  option of the subcommand the row names.
Where a command line goes:
- `silkie ...`: `silkie.cli.build_parser()`;
- `python vlfeedback_dataset.py ...` and `python -m silkie.train ...`: the parser their `main` builds;
- `accelerate launch ... -m silkie.train ARGS`: accelerate's own launch parser, then `silkie.train`'s
  on ARGS, and the `--config_file` must exist;
- `make TARGET`: the Makefile defines TARGET;
- pip, venv, pytest, hf, apt-get and shell built-ins are other programs' and not pinned. Any other
  program fails the test: a new kind of command line must be given a parser here.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from silkie.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# Command lines the parsers check; the README had 18 when this was written. The floor keeps a broken
# extraction (a renamed fence, a reformatted table) from passing with nothing checked.
MIN_PINNED = 15
PLACEHOLDERS = ("...", "…")
# Other programs' command lines, by their first words.
EXTERNAL = (("pip",), ("pip3",), ("hf",), ("apt-get",), ("sudo",), ("git",), ("cd",), (".",), ("source",),
            ("python", "-m", "venv"), ("python3", "-m", "venv"), ("python", "-m", "pytest"),
            ("python3", "-m", "pytest"), ("python", "-m", "pip"), ("python3", "-m", "pip"))
PROGRAMS = ("silkie", "python", "python3", "accelerate", "make")


def strip_comment(line: str) -> str:
    """The line up to a `#` that starts a word outside quotes, as the shell reads it."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def bash_commands(text: str) -> list[str]:
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        pending = ""
        for line in block.splitlines():
            line = strip_comment(line)
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split, lexer.commenters = True, ""
            words: list[str] = []
            for word in [*lexer, "&&"]:  # a closing separator ends the last command
                if word not in ("&&", "||", ";", "|"):
                    words.append(word)
                elif words:
                    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                        words.pop(0)
                    commands.append(shlex.join(words))
                    words = []
    return commands


def table_rows(text: str) -> list[tuple[str, str]]:
    """(first cell as a command, the whole row) for each table row whose first cell is one code span."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)]
        if line.startswith("|") and len(cells) > 2:
            span = re.fullmatch(r"`([^`]+)`", cells[1])
            if span and span.group(1).split()[0] in PROGRAMS:
                rows.append((span.group(1).replace("\\|", "|"), line.replace("\\|", "|")))
    return rows


def is_synopsis(cell: str) -> bool:
    return any(mark in cell for mark in ("[", "|", *PLACEHOLDERS)) or bool(re.search(r"(?<!\S)[A-Z](?!\S)", cell))


def command_lines() -> tuple[list[str], list[str]]:
    """(the command lines to parse, those skipped by the rules above)."""
    text = README.read_text()
    commands, skipped = [], []
    for line in bash_commands(text):
        (skipped if any(word in PLACEHOLDERS for word in shlex.split(line)) else commands).append(line)
    for cell, _ in table_rows(text):
        (skipped if is_synopsis(cell) else commands).append(cell)
    return commands, skipped


COMMANDS, SKIPPED = command_lines()


class Parsed(Exception):
    """Raised in place of returning from `parse_args`, so that a `main` stops right after parsing."""


def parse_with_main(main, argv: list[str], monkeypatch) -> argparse.Namespace:
    """Parse `argv` with the parser `main` builds, and run nothing."""
    real = argparse.ArgumentParser.parse_args

    def parse_only(parser, args=None, namespace=None):
        raise Parsed(real(parser, args, namespace))

    with monkeypatch.context() as patched, pytest.raises(Parsed) as parsed:
        patched.setattr(argparse.ArgumentParser, "parse_args", parse_only)
        main(argv)
    return parsed.value.args[0]


def parser_of(words: list[str]) -> str | None:
    """Which parser checks a command line: silkie, vlfeedback_dataset.py, silkie.train, accelerate,
    make, external (another program's), or None (no rule for it)."""
    if words[0] in ("python", "python3") and words[1:2] == ["vlfeedback_dataset.py"]:
        return "vlfeedback_dataset.py"
    if words[0] in ("python", "python3") and words[1:3] == ["-m", "silkie.train"]:
        return "silkie.train"
    if words[:2] == ["accelerate", "launch"]:
        return "accelerate"
    if words[0] in ("silkie", "make"):
        return words[0]
    return "external" if tuple(words[:3]) in EXTERNAL or tuple(words[:1]) in EXTERNAL else None


def check(line: str, monkeypatch) -> None:
    """Parse one command line with its parser (argparse raises SystemExit where it does not parse)."""
    words = shlex.split(line)
    which = parser_of(words)
    if which == "silkie":
        build_parser().parse_args(words[1:])
    elif which == "vlfeedback_dataset.py":
        import vlfeedback_dataset

        parse_with_main(vlfeedback_dataset.main, words[2:], monkeypatch)
    elif which == "silkie.train":
        import silkie.train

        parse_with_main(silkie.train.main, words[3:], monkeypatch)
    elif which == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        import silkie.train

        launched = launch_command_parser().parse_args(words[2:])
        assert launched.module and launched.training_script == "silkie.train", line
        assert launched.config_file is None or (ROOT / launched.config_file).is_file(), launched.config_file
        parse_with_main(silkie.train.main, launched.training_script_args, monkeypatch)
    elif which == "make":
        targets = [name for name in re.findall(r"^([\w.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), flags=re.M)
                   if not name.startswith(".")]
        for target in [word for word in words[1:] if "=" not in word and not word.startswith("-")] or targets[:1]:
            assert target in targets, f"{line}: the Makefile has no target {target!r}"
    else:
        assert which == "external", f"{line}: no parser for this program; give it one in tests/test_readme.py"


@pytest.mark.parametrize("line", COMMANDS, ids=lambda line: line)
def test_readme_command_line_parses(line, monkeypatch, capsys):
    try:
        check(line, monkeypatch)
    except SystemExit as stop:
        pytest.fail(f"the README's `{line}` does not parse (exit {stop.code}): {capsys.readouterr().err.strip()}")


def test_the_readme_pins_enough_command_lines():
    parsed = [line for line in COMMANDS if parser_of(shlex.split(line)) not in ("external", "make", None)]
    assert len(parsed) >= MIN_PINNED, f"only {len(parsed)} command lines parsed: {parsed}; skipped: {SKIPPED}"


def subcommands(parser: argparse.ArgumentParser, path=()):
    """(path, parser) for the parser and every subcommand under it, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subcommands(child, (*path, name))


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_every_flag_the_commands_table_names_exists():
    """A synopsis is not parsed, but its flags are the README's spellings too."""
    parsers = dict(subcommands(build_parser()))
    rows = [(cell, row) for cell, row in table_rows(README.read_text()) if cell.startswith("silkie ")]
    assert len(rows) >= 10
    for cell, row in rows:
        # The subcommand: the leading words that name one; `a|b` names each of a and b.
        named = [()]
        for word in cell.split()[1:]:
            longer = [(*path, choice) for path in named for choice in word.split("|") if (*path, choice) in parsers]
            if not longer:
                break
            named = longer
        assert named != [()], f"{cell}: names no subcommand"
        known = set().union(*(options(parsers[path]) for path in named))
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", row):
            assert flag in known, f"the README's `{flag}` is no option of `silkie {' '.join(named[0])}`"


HELP_PATHS = [path for path, _ in subcommands(build_parser())]


@pytest.mark.parametrize("path", HELP_PATHS, ids=lambda path: " ".join(("silkie", *path)))
def test_help_exits_zero(path, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*path, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: silkie")


@pytest.mark.parametrize("argv", [["--help"], ["build", "--help"], ["push", "--help"]])
def test_dataset_builder_help_exits_zero(argv, capsys):
    import vlfeedback_dataset

    with pytest.raises(SystemExit) as stop:
        vlfeedback_dataset.main(argv)
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("usage: vlfeedback_dataset.py")


def test_train_module_help_exits_zero(capsys):
    import silkie.train

    with pytest.raises(SystemExit) as stop:
        silkie.train.main(["--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m silkie.train")
