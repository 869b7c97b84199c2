"""The options as a person meets them: help that says what a command does, values the parser
refuses naming the option, the README's table kept to the parser, and configuration files.

Real subprocesses of `avalon-worker` (and `wo-processor`); the parser itself where the test is
about the list of options.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from avalon_worker._cli.options import ConfigError, configurable, load_config
from avalon_worker._cli.parser import add_server_arguments

from conftest import MISBEHAVING_REGISTRY, run_cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "worker.toml"
WO_PROCESSOR = "import sys; from avalon_worker._cli.main import wo_processor_main; sys.exit(wo_processor_main())"


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return parser


def start_serving(command: list[str], log: Path) -> subprocess.Popen[str]:
    """A worker started by `command`, once it says where it listens; its log goes to `log`."""
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        process.wait()
        pytest.fail(f"the worker did not start:\n{log.read_text()}")
    return process


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    assert process.wait(timeout=30) == 0


# help -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command,opening", [
    ("serve", "Run the worker: serve EEA Trusted Compute v1.1 work orders"),
    ("demo", "Start a worker with a new identity in a temporary directory"),
    ("config", "Print the configuration `serve` would run with"),
])
def test_help_says_what_the_command_does(command: str, opening: str) -> None:
    done = run_cli(command, "--help")
    assert done.returncode == 0
    description = " ".join(done.stdout.split("\n\n")[1].split())
    assert description.startswith(opening), done.stdout


# values the parser refuses ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["serve"],
    ["listener", "--store", "postgresql://nobody@127.0.0.1:9/none", "--listen-http", "127.0.0.1:0"],
    ["pump", "--store", "postgresql://nobody@127.0.0.1:9/none", "--endpoint", "tcp://127.0.0.1:9"],
])
def test_an_unknown_log_level_is_refused_naming_the_option(command: list[str], tmp_path: Path) -> None:
    extra = ["--state-dir", str(tmp_path / "s")] if command == ["serve"] else []
    done = run_cli(*command, *extra, "--log-level", "VERBOSE")
    assert done.returncode == 2
    assert "argument --log-level: invalid choice: 'VERBOSE'" in done.stderr
    assert all(level in done.stderr.splitlines()[-1] for level in ("DEBUG", "INFO", "WARNING", "ERROR"))
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("option,value,message", [
    ("--workers", "-1", "must be >= 0, not -1"),
    ("--workers", "two", "'two' is not a whole number"),
    ("--queue-limit", "-5", "must be >= 0, not -5"),
    ("--spare-workers", "-1", "must be >= 0, not -1"),
    ("--memory-limit-mb", "-100", "must be >= 0, not -100"),
    ("--max-request-bytes", "0", "must be >= 1, not 0"),
    ("--timeout-s", "0", "must be > 0, not 0"),
    ("--timeout-s", "nan", "'nan' is not a finite number"),
    ("--replay-window-s", "-2.5", "must be >= 0, not -2.5"),
    ("--result-ttl", "-1", "must be > 0, not -1"),
    ("--metrics-port", "70000", "must be <= 65535, not 70000"),
])
def test_a_number_serve_cannot_take_is_refused_naming_the_option(tmp_path: Path, option: str, value: str,
                                                                    message: str) -> None:
    done = run_cli("serve", "--state-dir", str(tmp_path / "s"), option, value)
    assert done.returncode == 2
    assert f"argument {option}: {message}" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "s").exists()


@pytest.mark.parametrize("args,message", [
    (["signup", "--endpoint", "tcp://127.0.0.1:9", "--timeout-s", "-1"], "argument --timeout-s: must be > 0, not -1"),
    (["submit", "--endpoint", "tcp://127.0.0.1:9", "--timeout-s", "0", "--workload", "python-hello", "x"],
     "argument --timeout-s: must be > 0, not 0"),
    (["verify", "--endpoint", "tcp://127.0.0.1:9", "--policy", "p.json", "--timeout-s", "-3"],
     "argument --timeout-s: must be > 0, not -3"),
    (["listener", "--store", "x", "--listen-http", "127.0.0.1:0", "--max-pending", "0"],
     "argument --max-pending: must be >= 1, not 0"),
    (["pump", "--store", "x", "--endpoint", "tcp://127.0.0.1:9", "--max-in-flight", "-8"],
     "argument --max-in-flight: must be >= 1, not -8"),
])
def test_the_other_commands_refuse_such_numbers_too(args: list[str], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_wo_processor_takes_both_spellings_of_the_registry(tmp_path: Path) -> None:
    for spelling in ("--workload", "--workloads"):
        log = tmp_path / f"{spelling}.log"
        process = start_serving([sys.executable, "-c", WO_PROCESSOR, "--bind", "tcp://127.0.0.1:*", "--state-dir",
                                 str(tmp_path / "s"), "--rsa-bits", "2048", "--attestation", "none", "--workers", "0",
                                 spelling, MISBEHAVING_REGISTRY], log)
        stop(process)
        assert "mark-then-sleep" in next(line for line in log.read_text().splitlines() if "workloads: " in line), spelling


# the README's table -----------------------------------------------------------------------------------


def readme_serve_options() -> list[str]:
    """The option in the first cell of each row of the README's "Serving" table."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n### Serving\n", 1)[1]
    rows = []
    for line in section.lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        rows.append(line)
    options = [match.group(1) for row in rows[2:] if (match := re.match(r"\| `(--[a-z0-9-]+)", row))]
    assert len(options) == len(rows) - 2, "every row of the table names one option"
    return options


def test_the_readme_table_has_a_row_for_every_serve_option_and_no_other() -> None:
    documented = readme_serve_options()
    options = {action.option_strings[0] for action in configurable(serve_parser()).values()} | {"--config"}
    assert sorted(set(documented)) == sorted(documented), "no option has two rows"
    assert options - set(documented) == set(), "serve options missing from README.md's table"
    assert set(documented) - options == set(), "README.md's table names options serve does not have"


# configuration files ----------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_config_print_round_trips_and_the_command_line_wins(tmp_path: Path) -> None:
    config = write(tmp_path / "worker.toml", f'workers = 3\nlog-level = "warning"\nno_prefetch = true\ntimeout_s = 5\n'
                   f'state_dir = "{tmp_path / "state"}"\nbind = "tcp://127.0.0.1:7000"\nworker_id = "ab\\"cd"\n')
    first = run_cli("config", "--print", "--config", str(config))
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    for expected in ("workers = 3", 'log_level = "WARNING"', "no_prefetch = true", "timeout_s = 5.0",
                     'bind = "tcp://127.0.0.1:7000"', 'worker_id = "ab\\"cd"', "pin_cpus = false",
                     "# spare_workers: not set (default 1)"):
        assert expected in lines, (expected, first.stdout)
    printed = write(tmp_path / "printed.toml", first.stdout)
    again = run_cli("config", "--print", "--config", str(printed))
    assert again.stdout == first.stdout
    parser = serve_parser()
    parser.set_defaults(**load_config(config, parser))
    options = configurable(parser)
    effective = {dest: value for dest, value in vars(parser.parse_args([])).items() if dest in options and value is not None}
    assert load_config(printed, serve_parser()) == effective
    overridden = run_cli("config", "--print", "--config", str(config), "--workers", "1", "--log-level", "error")
    assert "workers = 1" in overridden.stdout.splitlines() and 'log_level = "ERROR"' in overridden.stdout.splitlines()


def test_config_print_shows_no_database_password() -> None:
    done = run_cli("config", "--print", "--store", "postgresql://avalon:s3cret@db.example:5432/avalon")
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout
    assert 'store = "postgresql://avalon@db.example:5432/avalon"' in done.stdout.splitlines()


@pytest.mark.parametrize("text,message", [
    ("wrokers = 2\n", "unknown key 'wrokers'"),
    ('workers = "4"\n', 'workers must be a whole number, not a string ("4")'),
    ("workers = -1\n", "workers: must be >= 0, not -1"),
    ("pin_cpus = 1\n", "pin_cpus must be true or false, not a whole number (1)"),
    ('log_level = "VERBOSE"\n', "log_level must be one of DEBUG, INFO, WARNING, ERROR, not 'VERBOSE'"),
    ("rsa_bits = 1024\n", "rsa_bits must be one of 2048, 3072, 4096, not 1024"),
    ('bind = ["tcp://*:7777"]\n', "bind must be a string, not an array"),
    ("workers = 2\nworkers = 3\n", "is not valid TOML"),
    ("queue-limit = 1\nqueue_limit = 2\n", "'queue_limit' is given twice"),
])
def test_a_wrong_key_or_value_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "bad.toml", text)
    done = run_cli("serve", "--config", str(config), "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"avalon-worker: {config}") and message in done.stderr, done.stderr
    assert not (tmp_path / "s").exists()


def test_an_unknown_key_is_answered_with_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path / "bad.toml", "threads = 4\n"), serve_parser())
    assert "hint: the keys are bind, workloads, state_dir, rsa_bits," in raised.value.diagnostics()
    assert "attestation_root" not in raised.value.diagnostics(), "hidden options are not configuration"


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    done = run_cli("serve", "--config", str(tmp_path / "none.toml"))
    assert done.returncode == 2
    assert done.stderr == f"avalon-worker: cannot read {tmp_path / 'none.toml'}: No such file or directory\n"


def test_serve_runs_with_the_file_and_the_command_line_over_it(tmp_path: Path) -> None:
    config = write(tmp_path / "worker.toml", f'bind = "tcp://127.0.0.1:*"\nstate-dir = "{tmp_path / "state"}"\n'
                   f'rsa_bits = 2048\nattestation = "none"\nworkers = 2\nworkloads = "{MISBEHAVING_REGISTRY}"\n')
    log = tmp_path / "serve.log"
    process = start_serving([sys.executable, "-m", "avalon_worker", "serve", "--config", str(config), "--workers", "0"], log)
    stop(process)
    text = log.read_text()
    assert "created identity" in text and f"(RSA-2048) in {tmp_path / 'state'}" in text
    assert "mark-then-sleep" in next(line for line in text.splitlines() if "workloads: " in line)
    assert "with no worker processes" in text, "--workers 0 on the command line wins over the file's 2"


def test_the_example_file_names_every_option_and_loads(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = set(re.findall(r"^#? ?([a-z_]+) = ", text, flags=re.MULTILINE))
    assert keys == set(configurable(serve_parser())), "examples/worker.toml shows every key, and no other"
    done = run_cli("config", "--print", "--config", str(EXAMPLE))
    assert done.returncode == 0, done.stderr


def test_a_taken_port_in_the_file_leaves_no_identity_behind(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write(tmp_path / "worker.toml", f'bind = "tcp://127.0.0.1:{taken.getsockname()[1]}"\n')
        done = run_cli("serve", "--config", str(config), "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 2 and "Address already in use" in done.stderr
    assert not (tmp_path / "s").exists()


# relative paths, one serve per state directory, config, did-you-mean ---------------------------------


def test_relative_paths_in_a_config_file_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config = write(folder / "worker.toml", 'state_dir = "state"\nworkloads = "../w/workloads.json"\n'
                   'store = "orders.sqlite3"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-m", "avalon_worker", "config", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f'state_dir = "{folder / "state"}"' in lines
    assert f'workloads = "{tmp_path / "w" / "workloads.json"}"' in lines
    assert f'store = "{folder / "orders.sqlite3"}"' in lines
    overridden = subprocess.run([sys.executable, "-m", "avalon_worker", "config", "--config", str(config),
                                 "--state-dir", "here"], capture_output=True, text=True, timeout=60, cwd=elsewhere)
    assert 'state_dir = "here"' in overridden.stdout.splitlines(), "the command line's paths are the shell's"


def test_config_prints_without_print() -> None:
    done = run_cli("config", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "workers = 2" in done.stdout.splitlines()


@pytest.mark.parametrize("argv,suggestion", [
    (["serve", "--wokers", "2"], "--wokers: did you mean --workers?"),
    (["serve", "--state-dri", "x"], "--state-dri: did you mean --state-dir?"),
    (["run-orders", "--endpont=tcp://127.0.0.1:1", "f.json"], "--endpont: did you mean --endpoint?"),
    (["listener", "--listen-htp", "127.0.0.1:0"], "--listen-htp: did you mean --listen-http?"),
])
def test_a_mistyped_option_gets_a_did_you_mean(argv: list[str], suggestion: str) -> None:
    done = run_cli(*argv)
    assert done.returncode == 2
    assert f"({suggestion})" in done.stderr, done.stderr


def test_a_second_serve_on_one_state_dir_names_the_first(tmp_path: Path) -> None:
    from conftest import launch_worker

    first = launch_worker(tmp_path / "s")
    try:
        second = run_cli("serve", "--state-dir", str(tmp_path / "s"), "--bind", "tcp://127.0.0.1:*", "--attestation", "none")
        assert second.returncode == 2
        [line, hint] = second.stderr.splitlines()
        assert line == (f"avalon-worker: the state directory {tmp_path / 's'} is in use by process {first.process.pid} "
                        "(another avalon-worker serve): one worker per identity")
        assert "--state-dir of its own" in hint
    finally:
        first.stop()
    third = launch_worker(tmp_path / "s")  # the lock went with the first
    third.stop()


def test_the_table_says_how_to_install_what_metrics_need() -> None:
    row = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `--metrics-port"))
    assert "pip install '.[metrics]'" in row and "pip install 'avalon-worker[metrics]'" in row
