"""Every `pipeline` / `train` command in the README and the user docs parses with the real CLIs,
so the documentation cannot drift from the options (docs/cluster.md is checked beside its
configs in test_cluster_resources.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_cluster_resources import _check_command, _commands

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/training.md", "docs/tools.md", "docs/pose.md", "docs/model.md"]


def _shell_blocks(path: Path) -> str:
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(), flags=re.S)
    # "..." stands for "options as above" in prose examples.
    return "\n".join(b.replace(" ...", "") for b in blocks)


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_parse(doc: str) -> None:
    commands = _commands(_shell_blocks(REPO / doc))
    for tool, args in commands:
        _check_command(tool, args, doc)
    if doc == "README.md":
        names = {f"{tool} {args[0]}" for tool, args in commands if args}
        assert {"pipeline build", "pipeline verify", "train fit", "train eval"} <= names
