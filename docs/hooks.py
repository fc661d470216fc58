"""mkdocs hook: the command-line reference (`reference/cli.md`) is generated from hwlat's own
parsers at build time, so it always says what the installed `hwlat --help` says."""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"


def _commands(parser: argparse.ArgumentParser, prefix: str):
    """(command line, parser) of every command and subcommand, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")


def cli_reference() -> str:
    from hwlat.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width
    parts = []
    for line, parser in _commands(build_parser(), "hwlat"):
        if line == "hwlat":
            continue
        depth = line.count(" ") + 1
        parts.append(f"{'#' * min(depth, 4)} `{line}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
