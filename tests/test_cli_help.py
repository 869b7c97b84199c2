"""What people look for in the command line: examples in every --help (each one a command line
the parser takes), and shell completion made from the parser.

Real `avalon-worker` subprocesses; the bash script runs in a real bash.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest

from avalon_worker._cli import parser as command_line

from conftest import run_cli

pytestmark = pytest.mark.slow

COMMANDS = sorted(command_line.EXAMPLES)


def test_every_command_has_examples() -> None:
    parser, _, _ = command_line.build()
    commands = next(action for action in parser._actions if hasattr(action, "choices") and action.choices)
    assert sorted(commands.choices) == COMMANDS  # type: ignore[arg-type]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_ends_with_examples_the_parser_takes(command: str) -> None:
    done = run_cli(command, "--help")
    assert done.returncode == 0
    shown = done.stdout.split("\nexamples:\n", 1)[1].splitlines()
    assert shown == [f"  {line}" for line in command_line.EXAMPLES[command]]
    for line in command_line.EXAMPLES[command]:
        words = shlex.split(line.split(" | ")[-1 if line.startswith("cat ") else 0].split(" > ")[0].split("   #")[0])
        words = [word for word in words if "=" not in word or word.startswith("-")]  # VAR=value prefixes
        assert words[0] == "avalon-worker", line
        parser, _, _ = command_line.build()
        parser.parse_args(words[1:])  # exits (fails the test) if the parser refuses it


def complete(script: str, *words: str) -> list[str]:
    """What bash completes for `words` (the last one being typed), with `script` sourced."""
    line = " ".join(shlex.quote(word) for word in words)
    program = (f"{script}\nCOMP_WORDS=(avalon-worker {line}); COMP_CWORD={len(words)}; _avalon_worker; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_from_the_parser() -> None:
    script = run_cli("completion", "bash").stdout
    assert "run-workload" in complete(script, "ru") and "run-orders" in complete(script, "ru")
    assert set(complete(script, "serve", "--wor")) == {"--workers", "--workloads", "--workload", "--worker-id"}
    assert complete(script, "serve", "--attestation", "") == ["auto", "none", "gramine", "tdx", "snp"]
    assert complete(script, "store", "") == ["migrate"]
    assert complete(script, "store", "migrate", "--st") == ["--store"] or "--store" in complete(script, "store", "--st")
    assert "--input-file" in complete(script, "submit", "--in")
    assert complete(script, "completion", "") == ["bash", "zsh"]


def test_zsh_completion_is_valid_zsh() -> None:
    if shutil.which("zsh") is None:  # .ci/run installs it and sets CI_REQUIRE_ZSH=1
        if os.environ.get("CI_REQUIRE_ZSH") == "1":
            pytest.fail("zsh is required here (CI_REQUIRE_ZSH=1) but is not installed")
        pytest.skip("zsh is not installed (apt-get install zsh); CI_REQUIRE_ZSH=1 makes this a failure")
    script = run_cli("completion", "zsh").stdout
    assert script.startswith("#compdef avalon-worker\n")
    done = subprocess.run(["zsh", "-n", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_zsh_completion_offers_every_command_and_option() -> None:
    script = run_cli("completion", "zsh").stdout
    parser, _, _ = command_line.build()
    for command in COMMANDS:
        assert f"'{command}:" in script and f"        {command}) _arguments" in script
    assert "'--attestation[" in script and ":value:(auto none gramine tdx snp)'" in script
    assert "'(--workloads --workload)'{--workloads,--workload}'[" in script
