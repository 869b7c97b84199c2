"""The commands' option types (checked numbers, endpoints, times), the shared `--log-level`, and
configuration files.

A number that an option cannot take is refused by argparse itself, naming the option
(`argument --workers: must be >= 0, not -1`). A configuration file (TOML) gives a command's
options as keys named like their destinations (`max_request_bytes`, or `max-request-bytes`). Its
values become the parser's defaults, so the command line still wins, and they pass the same
types and choices as the command line's: the parser is the one list of options.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from ..errors import SetupError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Keys of a configuration file that name files or directories: relative ones are relative to
# the file, wherever the command is started from (a relative state_dir that followed the working
# directory would make a new identity).
PATH_KEYS = ("state_dir", "workloads", "store")
CONFIG_OPTION = "--config"
_NOT_CONFIGURABLE = ("help", "config", "print_code_measurement")  # the last: a one-off action


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that answers a mistyped option with the option it resembles
    (`--wokers` → did you mean --workers?), among the chosen command's options."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """argparse's error, and the option a word that is none resembles (whichever error the
        unknown word caused: unrecognized, or a required option missing)."""
        options = self._options_of_chosen_command()
        for word in getattr(self, "_argv", []):
            name = word.split("=", 1)[0]
            if not name.startswith("--") or any(option.startswith(name) for option in options):
                continue
            close = difflib.get_close_matches(name, options, n=1, cutoff=0.75)
            if close:
                message += f" ({name}: did you mean {close[0]}?)"
                break
        super().error(message)

    def _options_of_chosen_command(self) -> list[str]:
        parser: argparse.ArgumentParser = self
        for word in getattr(self, "_argv", []):
            commands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
            if commands and word in commands[0].choices:
                parser = commands[0].choices[word]
        return [option for action in parser._actions for option in action.option_strings
                if option.startswith("--") and action.help is not argparse.SUPPRESS]


class ConfigError(SetupError):
    """A configuration file that cannot be read, or a key or value in it that is wrong."""


class Number:
    """An argparse `type`: an `int` or `float` no less than `minimum` (greater, with `above`) and
    no more than `maximum`; anything else is an `ArgumentTypeError` that says what is allowed."""

    def __init__(self, kind: type[int] | type[float], minimum: float, *, above: bool = False,
                 maximum: float | None = None) -> None:
        self.kind = kind
        self.minimum = minimum
        self.above = above
        self.maximum = maximum

    def __call__(self, text: str) -> Any:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if self.kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < self.minimum or (self.above and value == self.minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if self.above else '>='} {self.minimum:g}, not {text}")
        if self.maximum is not None and value > self.maximum:
            raise argparse.ArgumentTypeError(f"must be <= {self.maximum:g}, not {text}")
        return value


COUNT = Number(int, 0)  # processes, limits where 0 means none or off
POSITIVE_COUNT = Number(int, 1)
SECONDS = Number(float, 0, above=True)
SECONDS_OR_OFF = Number(float, 0)  # 0: off
PORT_OR_OFF = Number(int, 0, maximum=65535)


def endpoint_argument(text: str) -> str:
    """argparse type of --endpoint: a malformed endpoint is a usage error naming the option."""
    # Called only for the commands that take --endpoint, which load the client anyway.
    from ..client import BadEndpoint, check_endpoint

    try:
        return check_endpoint(text)
    except BadEndpoint as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def listener_argument(text: str) -> str:
    """argparse type of --listener: an http:// or https:// URL; a ZMQ endpoint or any other scheme
    is a usage error that says what to write."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        guess = f" (did you mean http://{text}/?)" if ":" in text else ""
        raise argparse.ArgumentTypeError(f"{text!r} has no scheme: write http://HOST:PORT/{guess}")
    if scheme in ("tcp", "ipc"):
        raise argparse.ArgumentTypeError(f"{text!r} is a ZMQ endpoint (give it to --endpoint); --listener takes the "
                                         "HTTP listener, http://HOST:PORT/ (the address of `serve --listen-http`)")
    if scheme not in ("http", "https") or not rest.strip("/"):
        raise argparse.ArgumentTypeError(f"{text!r}: write http://HOST:PORT/ (or https://)")
    return text


def parse_time(text: str) -> datetime:
    """argparse type of ``--at``: an ISO 8601 date or time; without a zone, UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, e.g. 2025-06-20 or 2025-06-20T12:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """`--log-level`, one of LOG_LEVELS in any case; any other word is refused."""
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                        help="DEBUG, INFO, WARNING or ERROR (default INFO)")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """`--config FILE`: read by `parse_with_config`, before the rest of the command line."""
    parser.add_argument(CONFIG_OPTION, metavar="FILE",
                        help="a TOML file of these options, keyed by name (e.g. workers = 4); "
                        "the command line overrides it")


def configurable(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options a configuration file may give, by destination: every option `--help` shows."""
    return {
        action.dest: action for action in parser._actions
        if action.option_strings and action.help is not argparse.SUPPRESS and action.dest not in _NOT_CONFIGURABLE
    }


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None, options: argparse.ArgumentParser,
                      targets: Iterable[argparse.ArgumentParser]) -> argparse.Namespace:
    """`parser.parse_args(argv)`; if that gives `--config FILE`, the file's values (checked
    against `options`) become the defaults of `targets` (the parsers that take them) and the
    command line is parsed again, so that what it says wins."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    values = load_config(path, options)
    for target in targets:
        target.set_defaults(**values)
    return parser.parse_args(argv)


def _tomllib() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # Python 3.10
        import tomli
    except ImportError:
        raise ConfigError(f"{CONFIG_OPTION} needs Python 3.11 or newer, or the tomli package on "
                          "Python 3.10 (pip install tomli)") from None
    return tomli


def load_config(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The option values in the TOML file `path`, checked against `parser`'s options as the
    command line's are. Raises `ConfigError` naming the file and the key."""
    tomllib = _tomllib()
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    options = configurable(parser)
    values: dict[str, Any] = {}
    for key, value in document.items():
        dest = key.replace("-", "_")
        action = options.get(dest)
        if action is None:
            raise ConfigError(f"{path}: unknown key {key!r}", hint=f"the keys are {', '.join(options)}")
        if dest in values:
            raise ConfigError(f"{path}: {dest!r} is given twice (once with dashes, once with underscores)")
        values[dest] = _checked(f"{path}: {key}", value, action)
    for dest in PATH_KEYS:
        value = values.get(dest)
        if isinstance(value, str) and "://" not in value and not os.path.isabs(os.path.expanduser(value)):
            values[dest] = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), value))
    return values


def _kind(action: argparse.Action) -> type:
    """What a TOML value of `action` must be: bool, int, float or str."""
    if action.nargs == 0:
        return bool
    kind = getattr(action.type, "kind", action.type)
    return kind if kind in (int, float) else str


_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _checked(where: str, value: Any, action: argparse.Action) -> Any:
    kind = _kind(action)
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        raise ConfigError(f"{where} must be {_NAMES[kind]}, not {_toml_type(value)} ({_toml_value(value)})")
    if kind is not bool and action.type is not None:
        try:
            value = action.type(str(value))  # type: ignore[operator]
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, action.choices))}, not {value!r}")
    return value


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a whole number", float: "a number", str: "a string", list: "an array",
             dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return repr(value)


def config_toml(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """`parser`'s configurable options in `args` as a TOML document that `load_config` reads
    back to the same values; an option without a value is shown as a comment."""
    lines = []
    for dest, action in configurable(parser).items():
        value = getattr(args, dest, None)
        if value is None:
            lines.append(f"# {dest}: not set ({_unset(action)})")
        else:
            lines.append(f"{dest} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _unset(action: argparse.Action) -> str:
    help_text = str(action.help or "")
    start = help_text.find("(default")
    return help_text[start + 1:help_text.find(")", start)] if start >= 0 else "its default applies"
