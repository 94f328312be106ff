"""Flag help speaks of flags, not of Python values: no `None`, `False` or `True` (the API's
words for an option left out or switched off) in any subcommand's help; a boolean option's
help names its `--no-...` form where it says what turning it off does."""
from __future__ import annotations

import argparse
import re

from hear_matpac.cli import build_parser
from hear_matpac.options import option_help


def _subparsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from _subparsers(sub)


def test_no_flag_help_names_a_python_value():
    found = []
    for parser in _subparsers(build_parser()):
        for action in parser._actions:
            text = action.help if isinstance(action.help, str) else ""
            if text != argparse.SUPPRESS and re.search(r"\b(None|False|True)\b", text):
                found.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}: {text}")
    assert not found, "\n".join(found)


def test_a_boolean_option_that_says_what_off_does_names_its_no_flag():
    parser = next(p for p in _subparsers(build_parser()) if p.prog == "hear-matpac demo")
    helps = {a.dest: a.help for a in parser._actions}
    for name, text in option_help().items():
        if re.search(r"\bFalse\b", text):
            flag = "--no-" + name.replace("_", "-")
            assert flag in helps[name], helps[name]
