"""`lora-ft --version` and the examples in `lora-ft <command> --help`: every example parses as written."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import lora_ft
from lora_ft.cli import build_parser
from lora_ft.cli_examples import EXAMPLES

REPO = Path(__file__).resolve().parents[1]


def test_version_prints_the_package_version():
    out = subprocess.run([sys.executable, "-m", "lora_ft", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"lora-ft {lora_ft.__version__}"


def test_every_command_has_examples_and_each_example_parses():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps its sub-parsers here
    assert set(EXAMPLES) == set(commands)
    for name, command in commands.items():
        assert "examples:" in command.format_help() and "exit codes" in command.format_help()
        for line in EXAMPLES[name].strip().splitlines():
            words = shlex.split(line.split("  #")[0])
            if words[:2] == ["accelerate", "launch"]:
                words = words[words.index("lora_ft") + 1 :]
            else:
                assert words[0] == "lora-ft", line
                words = words[1:]
            args = parser.parse_args(words)  # exits (SystemExit) on an example that no longer parses
            assert args.command == name
            config = getattr(args, "config", None)  # the example configs ship with the repository
            if config and config.startswith("configs/"):
                assert (REPO / config).is_file(), line


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_exits_zero(command):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
