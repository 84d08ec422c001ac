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


def test_documented_python_reader_runs(tmp_path, monkeypatch) -> None:
    """The pose-only reading example of docs/tools.md runs as written on a built dataset."""
    from train_support import make_dataset

    make_dataset(tmp_path / "shards" / "k400", {"train": 5, "val": 2}, samples_per_shard=2)
    for tar in (tmp_path / "shards" / "k400").glob("*/rgb-*.tar"):
        tar.unlink()  # pose-only readers never need the RGB shards
    text = (REPO / "docs" / "tools.md").read_text()
    (snippet,) = re.findall(
        r"```python\n(from pipeline\.shards import Dataset\n.*?)```", text, re.S
    )
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, tuple, int]] = []
    snippet = snippet.replace(
        'label = sample["json"]["label"]  # index into split.info.classes',
        'label = sample["json"]["label"]  # index into split.info.classes\n'
        "    seen.append((key, keypoints.shape, label))",
    )
    exec(snippet, {"seen": seen})  # noqa: S102 (the documented example itself)
    assert len(seen) == 5 and all(len(shape) == 4 and shape[-1] == 3 for _, shape, _ in seen)
