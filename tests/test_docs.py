"""The README and the documentation say what the code does: the README stays short, its links
resolve, and every `hwlat` command in it and in the docs parses with today's command line (the
tutorials' loops run for real in their own tests: test_adapt.py runs the adapt tutorial with
onnxruntime, test_profile_device.py the profile-device one on a tiny budget, test_lut.py and
test_cli_errors.py the predict commands, test_examples.py the constraint examples)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from hwlat.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "benchmarks" / "RESULTS.md"]


def code_lines(text: str) -> list[str]:
    """Lines of the fenced code blocks of a markdown text (shell or unlabelled), continuations joined."""
    out, block, lang = [], False, ""
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence:
            block, lang = (not block, fence.group(1)) if not block else (False, "")
            continue
        if block and lang in ("", "bash", "sh", "console"):
            if out and out[-1].endswith("\\"):
                out[-1] = out[-1][:-1] + " " + line.strip()
            else:
                out.append(line.strip())
    return out


def hwlat_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for line in code_lines(page.read_text()):
            m = re.match(r"^(?:\.venv/bin/)?hwlat\s+(.*)$", line)
            if m:
                found.append((str(page.relative_to(ROOT)), m.group(1).split(" #")[0].strip()))
    return found


COMMANDS = hwlat_commands()


def test_the_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    for job in ("profile-cpu.md", "predict.md", "adapt.md", "constraints.md"):  # each job one click away
        assert f"docs/tutorials/{job}" in text


def test_pages_show_commands():
    assert len(COMMANDS) > 40
    assert {p for p, _ in COMMANDS} >= {"README.md", "docs/tutorials/adapt.md", "docs/tutorials/profile-cpu.md"}


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}: {c[:60]}" for p, c in COMMANDS])
def test_every_documented_command_parses(page, command):
    argv = shlex.split(command)
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        if exc.code != 0:  # --help and --version exit 0
            pytest.fail(f"{page}: `hwlat {command}` does not parse")
        return
    assert getattr(args, "func", None) is not None, f"{page}: `hwlat {command}` names no command"


def test_documented_scripts_exist():
    for page in PAGES:
        for line in code_lines(page.read_text()):
            m = re.match(r"^\.venv/bin/python (\S+\.py)", line)
            if m:
                assert (ROOT / m.group(1)).is_file(), (page, m.group(1))


def test_the_installation_pages_check_runs(capsys):
    assert main(["table", "list"]) == 0
    assert main(["predict", "--space", "nb201", "--arch", "1462", "--table", "cpu_onnxruntime_fp32_threads1"]) == 0
    assert "ms" in capsys.readouterr().out


def test_the_cli_reference_covers_every_command():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    text = hooks.cli_reference()
    for command in ("hwlat profile device", "hwlat predict", "hwlat adapt suggest", "hwlat adapt fit", "hwlat search",
                    "hwlat table show", "hwlat bench transfer"):
        assert f"`{command}`" in text


# The tutorials that run end to end here, on small inputs: each page's commands in order, in one
# folder, with these substitutions (fewer architectures, the quick protocol).
SMALL = {
    "docs/tutorials/predict.md": {"random:500": "random:20"},
    "docs/tutorials/adapt.md": {"-n 20": "-n 4", "--out measured": "--out measured --protocol quick --passes 1",
                                "--archs all": "--archs 0:500", "--budget 200": "--budget 30"},
}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("page", sorted(SMALL))
def test_tutorial_runs_as_written_on_small_inputs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / page).read_text()
    if page.endswith("predict.md"):  # the page's export step, then its commands
        exec(compile(python_blocks(text)[0], page, "exec"), {})
    for line in code_lines(text):
        m = re.match(r"^hwlat\s+(.*)$", line)
        if not m:
            continue
        command = m.group(1).split(" #")[0].strip()
        for old, new in SMALL[page].items():
            command = command.replace(old, new)
        assert main(shlex.split(command)) == 0, (page, command, capsys.readouterr().err)
    if page.endswith("adapt.md"):  # its Python, then the constraint page's on the predictor it made
        exec(compile(python_blocks(text)[-1], page, "exec"), {})
        constraints = python_blocks((ROOT / "docs/tutorials/constraints.md").read_text())
        names = {"arch": 1462, "archs": [1462, 0, 17], "candidates": list(range(50)), "loss": 2.0}
        for block in constraints[:3]:
            exec(compile(block, "docs/tutorials/constraints.md", "exec"), names)
        assert names["feasible"] and all(names["c"](a).feasible for a in names["feasible"])
        assert (names["check"].sigma_ms > 0).all() and not (names["check"].feasible & ~names["c"](names["archs"]).feasible).any()


def test_the_transfer_pages_python_runs():
    """docs/concepts/transfer.md's snippet, its three placeholders filled in."""
    import numpy as np

    names = {"ten_random_keys": list(range(10)), "measured_ms": np.linspace(0.2, 3.0, 20), "candidates": [1462, 0]}
    exec(compile(python_blocks((ROOT / "docs/concepts/transfer.md").read_text())[0], "transfer.md", "exec"), names)
    assert names["ms"].shape == (2,) and (names["ms"] > 0).all()


def _options(parser, path=("hwlat",)):
    """(command, option, default, help) of every option of every (sub)command."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)) and action.option_strings:
            yield " ".join(path), "/".join(action.option_strings), action.default, action.help or ""


def test_every_option_says_what_it_does_and_its_default():
    """`hwlat COMMAND --help` explains each option, and one with a default states it."""
    quiet = {None, False, "", (), argparse.SUPPRESS}  # SUPPRESS: a -v after the command keeps the one before it
    for command, flag, default, text in _options(build_parser()):
        assert text, f"`{command} {flag}` has no help"
        if not (isinstance(default, (list, tuple)) and not default) and default not in quiet:
            assert "default" in text, f"`{command} {flag}`: its default {default!r} is not in its help"


def _subcommands(parser) -> dict:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _named_commands():
    """(where, `hwlat ...` text) of every command named in the docs' prose and in the code's strings
    (messages, hints, help), which the fenced-block test above does not see."""
    import ast

    for page in PAGES:
        for m in re.finditer(r"`(?:\.venv/bin/)?(hwlat [^`]+)`", page.read_text()):
            yield str(page.relative_to(ROOT)), m.group(1)
    for path in sorted((ROOT / "hwlat").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):  # an f-string: its fields stand for one word each
                text = "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            for m in re.finditer(r"hwlat (?:[a-z][a-z-]* ?)+[^`\n\"'()|;]*", text):
                yield f"{path.relative_to(ROOT)}:{node.lineno}", m.group(0)


def test_every_flag_a_message_or_the_prose_names_is_an_option_of_that_command():
    """`hwlat CMD ... --flag VALUE` in a hint, a help text or the docs' prose names an option of CMD, with a
    value it takes (placeholders such as NAME or X aside)."""
    bad = []
    for where, text in _named_commands():
        parser, words, named = build_parser(), text.split()[1:], False
        while words and words[0] in _subcommands(parser):
            parser, named = _subcommands(parser)[words.pop(0)], True
        if not named or _subcommands(parser):
            continue  # `hwlat worker: ...`, `hwlat profile ...`: no command named
        options = {o: a for a in parser._actions for o in a.option_strings}
        for i, word in enumerate(words):
            flag = word.split("=")[0]
            if not re.match(r"^--?[a-zA-Z]", flag):
                continue
            if flag not in options:
                bad.append(f"{where}: {text!r}: {flag}")
            elif options[flag].choices and i + 1 < len(words) and re.match(r"^[a-z][\w-]*$", words[i + 1]) \
                    and words[i + 1] not in options[flag].choices:
                bad.append(f"{where}: {text!r}: {flag} {words[i + 1]}")
    assert not bad, "\n".join(bad)


def _shipped_tables_rows() -> list[tuple[list[str], str, str]]:
    """(table names, description, rows cell) of each row of RESULTS.md's "Shipped tables" table."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text().split("## Shipped tables", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]  # a description may hold a `a|b`
        if len(cells) >= 3 and cells[0].startswith("`"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), "|".join(cells[1:-1]), cells[-1]))
    return rows


def test_the_shipped_tables_section_states_each_tables_rows_and_score():
    """Each shipped device table named in RESULTS.md's "Shipped tables" has the rows (total, and measured
    where the cell says so) and the self-score (networks within ±10%, MAPE) that its files hold."""
    from hwlat.device_tables.table import DeviceTable

    tables = ROOT / "hwlat" / "device_tables" / "tables"
    checked = set()
    for names, description, cell in _shipped_tables_rows():
        names = [n for n in names if "/" not in n and (tables / f"{n}.json").is_file()]  # device tables, not arch/
        if not names:
            continue
        counts = [c.strip() for c in re.sub(r" each\b", "", cell).split(", ")]
        counts = counts * len(names) if len(counts) == 1 else counts
        assert len(counts) == len(names), (names, cell)
        for name, count in zip(names, counts):
            table = DeviceTable.load(tables / name)
            m = re.fullmatch(r"([\d,]+)(?: \(([\d,]+) measured\))?", count)
            assert m, (name, count)
            assert int(m.group(1).replace(",", "")) == len(table), f"{name}: RESULTS.md says {count} rows, it has {len(table)}"
            if m.group(2):
                assert int(m.group(2).replace(",", "")) == len(table.rows("ok")), (name, count)
            score = table.meta.get("self_score") or {}
            if score.get("networks"):
                stated = rf"{score['within_10']} of {score['networks']}\W+(?:MAPE )?{100 * score['mape']:.1f}%"
                assert re.search(stated, description), \
                    f"{name}: RESULTS.md does not state its score, {score['within_10']} of {score['networks']} (MAPE {100 * score['mape']:.1f}%)"
            checked.add(name)
    shipped = {p.name[:-5] for p in tables.glob("*.json") if not p.name.endswith(".regressors.json")}
    assert checked == shipped, f"not in RESULTS.md's Shipped tables: {sorted(shipped - checked)}"


def test_a_page_whose_commands_read_an_onnx_file_says_where_it_comes_from():
    """A reader following one page from a fresh folder meets no `hwlat ... model.onnx` whose file the
    page neither exports (`torch.onnx.export`) nor points to the tutorial that does."""
    for page in PAGES:
        text = page.read_text()
        if any(re.search(r"\w\.onnx\b", line) for line in code_lines(text)):
            assert "torch.onnx.export" in text or "predict.md" in text, \
                f"{page.relative_to(ROOT)}: a command reads an .onnx file the page does not say how to make"
