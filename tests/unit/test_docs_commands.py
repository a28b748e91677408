"""Every command the documents show works as written: its Flask command path and options exist,
its make target exists, its replay subcommand, options and scenario parse, and so do the
reference receiver's options.

Commands are taken from fenced code blocks and inline code spans of the user-facing documents
(docs/decisions.md is history: it names commands that were renamed on purpose).
"""

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from click.testing import CliRunner
from flask.cli import FlaskGroup

from scripts import receiver
from scripts.replay.cli import build_parser
from scripts.replay.scenarios import resolve_scenario
from service import create_app

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    "README.md",
    "INSTRUCTIONS.md",
    "scripts/README.md",
    "scenarios/README.md",
    "console/README.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
]
HISTORY = {"docs/decisions.md"}
FENCE = re.compile(r"^\s*(```|~~~)(\S*)")
SPAN = re.compile(r"`([^`]+)`")
COMMANDS = {
    # `flask`, `scripts/flask` or `.venv/bin/flask`, alone or after `docker compose run web`.
    "flask": re.compile(r"(?:^|[\s(])(?:scripts/|\.venv/bin/)?flask(?=\s|$)(.*)"),
    "replay": re.compile(r"(?:^|[\s(])python3? -m scripts\.replay(?=\s|$)(.*)"),
    "make": re.compile(r"(?:^|[\s(])make(?=\s)(.*)"),
    # scripts/receiver (the wrapper) or `python -m scripts.receiver`, with or without .venv/bin/.
    "receiver": re.compile(
        r"(?:^|[\s(])(?:scripts/receiver|(?:\.venv/bin/)?python3? -m scripts\.receiver)(?=\s|$)(.*)"
    ),
}
SHELL_OPERATORS = {"&&", "||", ";", "|", ")", "&"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$")  # NAME, PATH, DAYS: a value the reader chooses


def code_texts(text):
    """(line number, code) of every code block line and inline span of a Markdown text.

    Indented (4 spaces) lines count as code; mermaid blocks are diagrams, not commands. Spans
    are found per paragraph, as one may continue on the next line.
    """
    found, paragraph, fence, language = [], [], None, ""

    def end_paragraph():
        joined = " ".join(line for _, line in paragraph)
        found.extend((paragraph[0][0], span) for span in SPAN.findall(joined))
        paragraph.clear()

    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            end_paragraph()
            fence, language = opened.group(1), opened.group(2)
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            elif language != "mermaid":
                found.append((number, line))
        elif line.startswith("    ") and not paragraph:
            found.append((number, line))
        elif not line.strip():
            end_paragraph()
        else:
            paragraph.append((number, line))
    end_paragraph()
    return found


def arguments(rest):
    """The arguments of a command line: up to a shell operator, a comment or an ellipsis."""
    try:
        tokens = shlex.split(rest, comments=True)
    except ValueError:
        tokens = rest.split()
    args = []
    for token in tokens:
        if token in SHELL_OPERATORS or token in {"...", "…"}:
            break
        args.append(token.rstrip(",.:)"))
    return args


def documented_commands():
    """(kind, "file:line", arguments) of every documented command."""
    commands = []
    for name in DOCUMENTS:
        if name in HISTORY or not (ROOT / name).is_file():
            continue
        for number, code in code_texts((ROOT / name).read_text(encoding="utf-8")):
            for kind, pattern in COMMANDS.items():
                for match in pattern.finditer(code):
                    commands.append((kind, f"{name}:{number}", arguments(match.group(1))))
    return commands


COMMANDS_FOUND = documented_commands()


def without_app_option(args):
    """`--app wsgi` is what scripts/flask sets; the command path is what is checked."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--app":
            skip = True
        elif not arg.startswith("--app="):
            kept.append(arg)
    return kept


@pytest.fixture(scope="module")
def flask_cli(tmp_path_factory):
    """The `flask` command line as scripts/flask runs it (plugins such as `db` included)."""
    database = f"sqlite:///{tmp_path_factory.mktemp('docs') / 'unused.db'}"
    return FlaskGroup(
        create_app=lambda: create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database})
    )


def makefile_targets():
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_./-]+):(?!=)", text, flags=re.M))


def test_the_documents_show_commands_of_each_kind():
    kinds = {kind for kind, _, _ in COMMANDS_FOUND}
    assert kinds == set(COMMANDS), f"the extraction found no {set(COMMANDS) - kinds} command"
    operator = [a for k, w, a in COMMANDS_FOUND if k == "flask" and w.startswith("INSTRUCTIONS")]
    assert ["held", "list", "--expired"] in operator


@pytest.mark.parametrize(
    "where, args",
    [(where, args) for kind, where, args in COMMANDS_FOUND if kind == "flask"],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_documented_flask_command_exists(flask_cli, where, args):
    result = CliRunner().invoke(flask_cli, [*without_app_option(args), "--help"])

    assert result.exit_code == 0, f"{where}: `flask {' '.join(args)}`: {result.output}"
    assert result.output.startswith("Usage:")


@pytest.mark.parametrize(
    "where, args",
    [(where, args) for kind, where, args in COMMANDS_FOUND if kind == "make"],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_documented_make_target_exists(where, args):
    targets = [arg for arg in args if not arg.startswith("-") and "=" not in arg]
    assert targets, f"{where}: `make {' '.join(args)}` names no target"
    assert set(targets) <= makefile_targets(), f"{where}: no make target {targets}"


@pytest.mark.parametrize(
    "where, args",
    [(where, args) for kind, where, args in COMMANDS_FOUND if kind == "replay"],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_documented_replay_command_parses(where, args):
    if not args:
        return  # the program named in prose
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{where}: `python3 -m scripts.replay {' '.join(args)}` exits {exc.code}")
    if parsed.command == "scenario" and parsed.name and not PLACEHOLDER.match(parsed.name):
        resolve_scenario(parsed.name)
    if parsed.command == "file" and not PLACEHOLDER.match(parsed.path):
        assert (ROOT / parsed.path).is_file(), f"{where}: no file {parsed.path}"


@pytest.mark.parametrize(
    "where, args",
    [(where, args) for kind, where, args in COMMANDS_FOUND if kind == "receiver"],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_documented_receiver_command_parses(where, args):
    try:
        receiver.options_from(receiver.build_parser().parse_args(args))
    except SystemExit as exc:
        pytest.fail(f"{where}: `scripts/receiver {' '.join(args)}` exits {exc.code}")
    except ValueError as exc:
        pytest.fail(f"{where}: `scripts/receiver {' '.join(args)}`: {exc}")


@pytest.mark.parametrize("document", ["README.md", "INSTRUCTIONS.md"])
def test_local_commands_need_no_activated_virtualenv(document):
    # A bare `flask` is whatever is on PATH (often nothing, or another project's): the local
    # documents run it as scripts/flask; in a container the image's `flask` is the right one.
    bare = re.compile(r"(?:^|[\s(])flask(?=\s)(.*)")
    for number, code in code_texts((ROOT / document).read_text(encoding="utf-8")):
        for match in bare.finditer(code):
            in_container = "docker" in code[: match.start()]
            assert in_container or not arguments(match.group(1)), f"{document}:{number}: {code}"


def test_scripts_flask_runs_without_an_activated_virtualenv(tmp_path):
    # From another directory, with only the system's programs on PATH: no `flask` there.
    result = subprocess.run(
        [str(ROOT / "scripts" / "flask"), "held", "list", "--help"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: flask held list")
    assert "--expired" in result.stdout
