"""Every `python -m src...` command the documentation shows composes as printed, in a shell.

Each command in a fenced block of README.md and docs/*.md is split as a POSIX shell would split
it and composed with its entry's config as Hydra would (`--cfg job`, without running it); for a
sweep (`-m`) the first job of the sweep is composed. Placeholders are plain words (`RUN_DIR`,
`PAGES`), so a command pasted with them fails on the missing file, never on its syntax.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from src.cli import quote_plain_values
from src.config import PROJECT_ROOT

DOCUMENTS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLAIN_VALUES = {"predict": ("points", "box"), "inpaint": ("points", "box")}  # as src/predict.py, src/inpaint.py say


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for each `python -m src.<entry>` line of a fenced block, continuations joined."""
    found = []
    for document in DOCUMENTS:
        for block in FENCE.findall(document.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip().startswith("python -m src."):
                    found.append((document.name, line.strip()))
    return found


def entry_and_overrides(command: str) -> tuple[str, list[str], bool]:
    """`python -m src.train -m a=1,2 b=3` -> ("train", ["a=1,2", "b=3"], multirun)."""
    words = shlex.split(command, comments=True)
    assert words[:2] == ["python", "-m"], command
    entry = words[2].removeprefix("src.")
    multirun = bool({"-m", "--multirun"} & set(words))
    args = [w for w in words[3:] if w not in ("-m", "--multirun", "--cfg", "job", "hydra", "all")]
    return entry, quote_plain_values(args, PLAIN_VALUES.get(entry, ())), multirun


def first_job(overrides: list[str]) -> list[str]:
    """The overrides of a sweep's first job: each swept key at its first value."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line
        for o in parsed
    ]


def compose_command(command: str):
    entry, overrides, multirun = entry_and_overrides(command)
    if multirun:
        overrides = first_job(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            return compose(config_name=entry, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


COMMANDS = documented_commands()


def test_the_documentation_shows_commands():
    assert len(COMMANDS) >= 20 and any(" -m " in c for _, c in COMMANDS)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_each_documented_command_composes(where, command):
    cfg = compose_command(command)
    assert cfg.task_name, f"{where}: {command}"


def test_prompts_typed_plainly_reach_hydra_as_strings():
    assert quote_plain_values(["box=35,25,112,88", "points=1,2;3,4,0", "image=a,b.png"], ("points", "box")) == [
        "box='35,25,112,88'",
        "points='1,2;3,4,0'",
        "image=a,b.png",
    ]
    cfg = compose_command("python -m src.predict image=a.png box=35,25,112,88 points=320,200")
    assert (cfg.box, cfg.points) == ("35,25,112,88", "320,200")
    kept = ["box=[1,2,3,4]", "points='1,2'", 'points="1,2"', "box=null"]
    assert quote_plain_values(kept, ("points", "box")) == kept


def test_a_shell_word_placeholder_is_needed(tmp_path: Path):
    """`<run>` would be a shell redirection: the documents use plain words instead."""
    assert not [c for _, c in COMMANDS if re.search(r"(?<![\"'])<[a-zA-Z ]+>", c)]
