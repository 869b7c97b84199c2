"""`avalon-worker completion bash|zsh`: a shell completion script, made from the parser itself.

So it offers exactly the commands, options and choices this version has. Bash completes the
command, then its options (and `store`'s actions), an option's choices after it, and file names
elsewhere; zsh does the same with each option's help as its description.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass

from . import parser as command_line


@dataclass(frozen=True)
class Option:
    """One option of a command, as a completion script needs it."""

    names: tuple[str, ...]
    takes_value: bool
    choices: tuple[str, ...]
    help: str
    file: bool  # its value names a file or directory

def _options(parser: argparse.ArgumentParser) -> list[Option]:
    options = []
    for action in parser._actions:
        if not action.option_strings or action.help is argparse.SUPPRESS:
            continue
        choices = tuple(str(choice) for choice in action.choices) if action.choices else ()
        metavar = str(action.metavar or action.dest).upper()
        options.append(Option(tuple(action.option_strings), action.nargs != 0, choices, str(action.help or ""),
                              any(word in metavar for word in ("FILE", "DIR"))))
    return options


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _words(parser: argparse.ArgumentParser) -> list[str]:
    """The words a command takes where no option is given: its actions, or its positional
    argument's choices."""
    words = list(_commands(parser))
    for action in parser._actions:
        if not action.option_strings and action.choices and not isinstance(action, argparse._SubParsersAction):
            words += [str(choice) for choice in action.choices]
    return words


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: str(choice.help or "") for choice in action._choices_actions}
    return {}


def bash(parser: argparse.ArgumentParser) -> str:
    """The bash script: `complete -F` with one case per command."""
    commands = _commands(parser)
    cases = []
    for name, command in commands.items():
        options = _options(command) + [o for action in _commands(command).values() for o in _options(action)]
        words = " ".join(dict.fromkeys(n for option in options for n in option.names))
        cases.append(f"        {name}) opts={shlex.quote(words)} words={shlex.quote(' '.join(_words(command)))} ;;")
    choices = sorted({f"        {n}) COMPREPLY=($(compgen -W {shlex.quote(' '.join(o.choices))} -- \"$cur\")); return ;;"
                      for command in commands.values() for o in _options(command) if o.choices for n in o.names})
    return "\n".join([
        "# bash completion for avalon-worker (avalon-worker completion bash)",
        "_avalon_worker() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" command="" opts="" words="" i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in -*) ;; *) command="${COMP_WORDS[i]}"; break ;; esac',
        "    done",
        '    if [[ -z "$command" ]]; then',
        f"        COMPREPLY=($(compgen -W {shlex.quote(' '.join([*commands, '--help', '--version']))} -- \"$cur\"))",
        "        return",
        "    fi",
        '    case "$prev" in',
        *choices,
        "    esac",
        '    case "$command" in',
        *cases,
        "    esac",
        '    if [[ "$cur" == -* ]]; then',
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        '    elif [[ -n "$words" ]]; then',
        '        COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "    else",
        '        COMPREPLY=($(compgen -f -- "$cur"))',
        "    fi",
        "}",
        "complete -o filenames -F _avalon_worker avalon-worker",
        "",
    ])


def _zsh_text(text: str) -> str:
    """A help text as a zsh `_arguments` description: short, without the characters it parses."""
    text = re.sub(r"\s+", " ", text.split(" (")[0].split("; ")[0]).strip()
    return text.replace("\\", "").replace("[", "(").replace("]", ")").replace(":", " ").replace("'", "")[:70]


def _zsh_spec(option: Option) -> str:
    """One `_arguments` spec, quoted for zsh: `'(-a --bee)'{-a,--bee}'[help]:value:action'`."""
    value = ""
    if option.takes_value:
        action = f"({' '.join(option.choices)})" if option.choices else "_files" if option.file else " "
        value = f":value:{action}"
    described = f"[{_zsh_text(option.help)}]{value}'"
    if len(option.names) == 1:
        return f"'{option.names[0]}{described}"
    return f"'({' '.join(option.names)})'{{{','.join(option.names)}}}'{described}"


def zsh(parser: argparse.ArgumentParser) -> str:
    """The zsh script (`#compdef`): `_describe` for the commands, `_arguments` for each."""
    commands = _commands(parser)
    helps = _helps(parser)
    described = " ".join(shlex.quote(f"{name}:{_zsh_text(helps.get(name, ''))}") for name in commands)
    cases = []
    for name, command in commands.items():
        specs = [_zsh_spec(option) for option in _options(command)]
        actions = list(_commands(command))
        if actions:
            specs.append(f"'1:action:({' '.join(actions)})'")
        specs.append("'*:file:_files'")
        cases.append(f"        {name}) _arguments -s {' '.join(specs)} ;;")
    return "\n".join([
        "#compdef avalon-worker",
        "# zsh completion for avalon-worker (avalon-worker completion zsh)",
        "_avalon_worker() {",
        f"    local -a commands; commands=({described})",
        "    if (( CURRENT == 2 )); then",
        "        _describe command commands",
        "        return",
        "    fi",
        "    local command=$words[2]",
        "    shift words; (( CURRENT-- ))",
        "    case $command in",
        *cases,
        "    esac",
        "}",
        '_avalon_worker "$@"',
        "",
    ])


def run(args: argparse.Namespace) -> int:
    """Print the script for `args.shell`."""
    parser, _, _ = command_line.build()
    print(bash(parser) if args.shell == "bash" else zsh(parser), end="")
    return 0
