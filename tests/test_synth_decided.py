"""synth.json says which stream could decide each video (issue 12's ceilings)."""

from __future__ import annotations

import json

from pipeline.synth import make_dataset


def test_decided_by_follows_the_class_table(tmp_path):
    make_dataset(
        tmp_path / "ooc", "mimetics", num_classes=4, context_pairs=1, shared_context=0,
        videos_per_class=6, frames=4, width=64, height=48, hidden_fraction=0.25, seed=3,
    )  # fmt: skip
    meta = json.loads((tmp_path / "ooc" / "synth.json").read_text())
    classes = meta["classes"]
    # Classes 0 and 1 share a motion: pose never decides them; the others when visible.
    for v in meta["videos"]:
        own = classes[v["label_index"]]
        shared_motion = sum(c["motion"] == own["motion"] for c in classes) > 1
        assert v["decided_by"]["pose"] == (v["hidden"] is None and not shared_motion)
        assert v["decided_by"]["scene"] == (v["context"] == own["context"])
    decided = [v["decided_by"] for v in meta["videos"]]
    # Out of context, scenes are drawn at random: some videos show their own scene, most not.
    assert 0 < sum(d["scene"] for d in decided) < len(decided)
    assert any(d["pose"] for d in decided) and not all(d["pose"] for d in decided)
