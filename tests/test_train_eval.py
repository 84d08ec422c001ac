"""`train eval`: the JSON report, protocols, score averaging, class maps, layout refusal."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from train_support import (  # noqa: F401 (fixture)
    make_dataset,
    one_torch_thread,
    shared_runs,
    train_cli,
)

from pipeline.errors import InvalidInput
from train import data as D
from train.contract import class_map, recipe_from_contract
from train.distributed import Dist
from train.evaluate import evaluate, load_eval_models, merge_recipes, predict


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


def run_eval(tmp_path, *args, name="report.json"):
    out = tmp_path / name
    result = train_cli("eval", "--out", out, "--workers", "0", "--clips", "3", *args)
    return json.loads(out.read_text()), result.output


def test_report_of_a_gated_model(runs, tmp_path):
    ckpt = runs["integral"] / "last.pt"
    report, output = run_eval(tmp_path, "--checkpoint", ckpt, "--data", runs["data"])
    index = D.open_split(str(runs["data"]), "val").index
    assert report["num_videos"] == len(index) == 12
    assert report["clips"] == 3 and report["split"] == "val"
    assert report["num_padded"] == 1  # the short video repeats its last frame
    assert 0 <= report["top1"] <= report["top5"] <= 100
    classes = ["arms up", "arms out", "arms down"]
    assert set(report["per_class"]) == set(classes)
    matrix = np.array(report["confusion"]["matrix"])
    assert report["confusion"]["classes"] == classes and matrix.shape == (3, 3)
    assert matrix.sum() == 12 and np.trace(matrix) / 12 * 100 == pytest.approx(
        report["top1"], abs=1e-3
    )
    assert 0 < report["mean_gate"] < 1 and set(report["gate_per_class"]) == set(classes)
    preds = report["predictions"]
    assert sorted(preds) == sorted(index.keys)
    assert all(p["clips"] == 3 and p["pred"] == p["top5"][0] for p in preds.values())
    assert sum(p["correct"] for p in preds.values()) / 12 * 100 == pytest.approx(
        report["top1"], abs=1e-3
    )
    assert "top-1 %" in output and "mean gate" in output  # the printed table


def test_official_protocol_drops_what_the_paper_drops(runs, tmp_path):
    ckpt = runs["appearance"] / "last.pt"
    report, _ = run_eval(
        tmp_path, "--checkpoint", ckpt, "--data", runs["data"], "--protocol", "official"
    )
    assert report["num_videos"] == 10
    assert report["num_dropped"]["no_pose"] == 1 and report["num_dropped"]["short"] == 1
    assert report["num_padded"] == 0
    assert "mean_gate" not in report  # not a gated model
    assert report["top1"] >= 66.0  # the class is visible: far above chance (33 %)


def test_score_average_is_the_mean_of_probabilities(runs):
    data = runs["data"]
    a, p = str(runs["appearance"] / "last.pt"), str(runs["pose"] / "last.pt")
    both = evaluate([a, p], str(data / "val"), None, Dist(), clips=2, workers=0)  # split folder
    assert both["combine"] == "mean" and both["num_videos"] == 12
    assert both["variants"] == ["appearance", "pose"]
    # The combined probabilities, clip for clip, are the mean of the two models'.
    split = D.open_split(str(data), "val")
    loaded = load_eval_models([a, p], Dist().device)
    recipe = merge_recipes(
        [recipe_from_contract(c["contract"], m.variant, split.info, train=False, num_clips=2)
         for m, c in loaded]
    )  # fmt: skip
    assert recipe.rgb is not None and recipe.pose is not None  # one clip feeds both models
    batches = list(D.make_loader(D.ClipDataset(split, recipe, 8), 0))
    models = [m for m, _ in loaded]
    together = predict(models, batches, Dist().device, Dist()).videos
    single = [predict([m], batches, Dist().device, Dist()).videos for m in models]
    assert sorted(together) == sorted(split.index.keys)
    for key, video in together.items():
        expected = (single[0][key].probs + single[1][key].probs) / 2
        np.testing.assert_allclose(video.probs, expected, atol=1e-6)


def test_class_map_matches_classes_by_name(runs, tmp_path):
    # Another dataset: classes reordered, spelled differently, and one the model never saw.
    other = tmp_path / "other"
    make_dataset(other, {"val": 6}, classes=("Arms_Out", "arms up", "jumping"), short=0)
    ckpt = runs["appearance"] / "last.pt"
    refused = train_cli("eval", "--checkpoint", ckpt, "--data", other, "--split", "val", ok=False)
    assert refused.exit_code != 0 and "--class-map name" in refused.output
    report, _ = run_eval(
        tmp_path, "--checkpoint", ckpt, "--data", other, "--split", "val", "--class-map", "name"
    )
    assert report["dropped_classes"] == ["jumping"]
    assert report["num_dropped"]["class_not_in_model"] == 2 and report["num_videos"] == 4
    labels = {p["label"] for p in report["predictions"].values()}
    assert labels == {"arms out", "arms up"}  # the model's names
    cmap = class_map(
        ["Arms_Out", "arms up", "jumping"], ["arms up", "arms out", "arms down"], "name"
    )
    assert cmap.to_model.tolist() == [1, 0, -1]


def test_class_map_mistakes_say_which_class(tmp_path):
    model_classes = ["arms up", "arms out", "arms down"]
    cases = [
        (["arms out", "arms up", "arms down"], None, "in another order (class 0 is 'arms out'"),
        (["arms up", "jumping", "arms down"], None, "the model has no 'jumping')"),
        (["arms up", "arms out"], None, "the dataset has 2 of the model's 3 classes"),
    ]
    bad_csv = {
        "one column": ("arms up\n", ":1: expected dataset_class,model_class"),
        "dataset lacks": ("# ours,theirs\nwaving,arms up\n", ":2: the dataset has no 'waving'"),
        "model lacks": ("arms up,waving\n", ":1: the model has no 'waving'"),
    }
    for name, (text, expected) in bad_csv.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text)
        cases.append((["arms up", "arms out", "arms down"], str(path), expected))
    for dataset_classes, spec, expected in cases:
        with pytest.raises(InvalidInput, match=re.escape(expected)):
            class_map(dataset_classes, model_classes, spec)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("raised,arms up\n\n")
    cmap = class_map(["raised", "arms down"], model_classes, str(renamed))
    assert cmap.to_model.tolist() == [0, 2]


def test_eval_refuses_what_it_could_only_fail_at_the_end(runs, tmp_path):
    ckpt = runs["pose"] / "last.pt"
    base = ("eval", "--checkpoint", ckpt, "--data", runs["data"], "--split", "val")
    # --plot of a model without a gate, --out onto a folder: refused before evaluating (a
    # Kinetics evaluation takes hours), three models: not a documented combination.
    for extra, status, message in (
        (("--plot", tmp_path / "g.png"), 2, "--plot: the model has no gate"),
        (("--out", tmp_path), 1, f"--out {tmp_path} is a folder"),
        (("--checkpoint", ckpt, "--checkpoint", ckpt), 2, "give one model, or two"),
        (("--split", "test"), 1, "no split 'test' in"),
        (("--video-info", _fake_synth(tmp_path / "synth.json", ["elsewhere"], set())), 1,
         "describes none of the"),
    ):  # fmt: skip
        result = train_cli(*base, *extra, ok=False)
        assert result.exit_code == status and "Traceback" not in result.output, result.output
        assert message in result.output.strip().splitlines()[-1]
        assert "top-1" not in result.output  # nothing was evaluated


def test_layout_mismatch_is_refused(runs, tmp_path):
    other = tmp_path / "openpose"
    make_dataset(other, {"val": 2}, layout="openpose18", short=0, no_person=0)
    result = train_cli("eval", "--checkpoint", runs["pose"] / "last.pt", "--data", other, ok=False)
    assert result.exit_code != 0
    assert "disagree on 'layout'" in result.output and "Traceback" not in result.output


def _fake_synth(path, keys, hidden):
    """A synth.json whose videos are the dataset's keys (the build's key is the file stem)."""
    videos = [
        {
            "key": k,
            "video": f"videos/{k}.mp4",
            "hidden": "occluded" if k in hidden else None,
            "decided_by": {"pose": k not in hidden, "scene": True},
        }
        for k in keys
    ]
    path.write_text(json.dumps({"videos": videos}))
    return path


def test_gate_statistics_are_distributions(runs, tmp_path):
    index = D.open_split(str(runs["data"]), "val").index
    hidden = set(index.keys[:3])
    synth = _fake_synth(tmp_path / "synth.json", index.keys, hidden)
    report, output = run_eval(
        tmp_path, "--checkpoint", runs["integral"] / "last.pt", "--data", runs["data"],
        "--video-info", synth, "--plot", tmp_path / "gate.png",
    )  # fmt: skip
    gate = report["gate"]
    per_video = gate["per_video"]
    assert sorted(per_video) == sorted(index.keys)
    values = np.array([per_video[k] for k in sorted(per_video)])
    assert gate["all"]["n"] == 12
    assert gate["all"]["mean"] == pytest.approx(values.mean(), abs=1e-6)
    assert gate["all"]["mean"] == pytest.approx(report["mean_gate"], abs=1e-5)
    assert gate["all"]["sd"] == pytest.approx(values.std(), abs=1e-6)
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    assert (gate["all"]["p10"], gate["all"]["p50"], gate["all"]["p90"]) == pytest.approx(
        (p10, p50, p90), abs=1e-6
    )
    # Per class, and by person found: the test data has one video without a person.
    assert sum(d["n"] for d in gate["per_class"].values()) == 12
    found = dict(zip(index.keys, index.person_fraction, strict=True))
    lost = [k for k, f in found.items() if f < 0.5]
    assert gate["by_person"]["person_fraction<0.5"]["n"] == len(lost) == 1
    assert gate["by_person"]["person_fraction<0.5"]["mean"] == pytest.approx(
        per_video[lost[0]], abs=1e-6
    )
    assert gate["by_person"]["person_fraction>=0.5"]["n"] == 11
    # By hidden person, from the synth.json; recorded per video too.
    assert gate["by_hidden"]["hidden"]["n"] == 3 and gate["by_hidden"]["visible"]["n"] == 9
    hidden_mean = np.mean([per_video[k] for k in hidden])
    assert gate["by_hidden"]["hidden"]["mean"] == pytest.approx(hidden_mean, abs=1e-6)
    preds = report["predictions"]
    assert all(preds[k]["hidden"] == (k in hidden) for k in preds)
    assert preds[lost[0]]["person_fraction"] == 0.0
    # Accuracy on the videos a stream could decide.
    subsets = report["subsets"]
    assert subsets["pose_decides"]["n"] == 9 and subsets["scene_decides"]["n"] == 12
    assert subsets["pose_cannot_decide"]["n"] == 3
    # Every video's scene decides it here: the complement is still reported, empty.
    assert subsets["scene_cannot_decide"] == {"n": 0, "fraction": 0.0, "top1": None}
    correct = [preds[k]["correct"] for k in preds if k not in hidden]
    assert subsets["pose_decides"]["top1"] == pytest.approx(100 * np.mean(correct), abs=1e-3)
    assert (tmp_path / "gate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gate, per video (12)" in output


def test_train_report_draws_the_gate_across_models(runs, tmp_path):
    ckpt = runs["integral"] / "last.pt"
    run_eval(tmp_path, "--checkpoint", ckpt, "--data", runs["data"], name="a.json")
    result = train_cli(
        "report", "--plot", tmp_path / "fig4.png", "--json", tmp_path / "t.json",
        "--series", "in context", "lambda 1.5", tmp_path / "a.json",
        "--series", "other", "lambda 1.5", tmp_path / "a.json",
    )  # fmt: skip
    assert (tmp_path / "fig4.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["panel"] for r in rows] == ["in context", "other"] and rows[0]["n"] == 12
    assert "per-video mean gate" in result.output
    # A stage-1 report has no gate: one line, exit 1.
    run_eval(tmp_path, "--checkpoint", runs["pose"] / "last.pt", "--data", runs["data"],
             name="p.json")  # fmt: skip
    bad = train_cli("report", "--series", "x", "y", tmp_path / "p.json", ok=False)
    assert bad.exit_code == 1 and "no per-video gates" in bad.output
    missing = train_cli("report", "--series", "x", "y", tmp_path / "nope.json", ok=False)
    assert missing.exit_code == 1 and missing.output.strip().endswith("nope.json: no such report")
    assert len(missing.output.strip().splitlines()) == 1
