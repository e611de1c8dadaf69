"""common/study.py: the statistics against independent statements, resume without re-running, the JSON
schema the notebooks and README read, and the CLI's errors."""
import json
import math
import os

import pytest

import common.study as S


def test_t_quantiles_and_paired_interval_against_textbook_values():
    # Student's t 97.5% quantiles (any table): df=1 12.706, df=2 4.303, df=4 2.776, df=9 2.262.
    assert [S.t975(d) for d in (1, 2, 4, 9)] == [12.706, 4.303, 2.776, 2.262]
    a, b = [0.80, 0.82, 0.84], [0.70, 0.74, 0.72]           # differences 0.10, 0.08, 0.12
    m, lo, hi = S.paired_interval(a, b)
    sd = math.sqrt(((0.10 - 0.10) ** 2 + (0.08 - 0.10) ** 2 + (0.12 - 0.10) ** 2) / 2)   # 0.02
    assert m == pytest.approx(0.10) and hi - m == pytest.approx(4.303 * sd / math.sqrt(3))
    assert lo == pytest.approx(0.10 - 4.303 * 0.02 / math.sqrt(3))
    with pytest.raises(ValueError, match="at least 2"):
        S.paired_interval([0.1], [0.2])
    assert S.mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, math.sqrt(5 / 3)))


def _tiny_study():
    return S.Study(name="tiny", paper="lkca", data="nearest-color", img_size=32, question="smoke",
                   arms={"a": {"model": "vit_05m"}, "b": {"model": "vit_05m_lkca"}},
                   recipe=dict(epochs=1, batch_size=16, train_size=32, val_size=16, max_steps_per_epoch=2,
                               data_seed=0))


def test_run_resume_schema_and_summary(tmp_path):
    out = str(tmp_path / "tiny.json")
    logs = []
    r = S.run_study(_tiny_study(), seeds=(0, 1), out=out, log=logs.append)
    saved = json.load(open(out))
    for k in ("study", "paper", "data", "img_size", "recipe", "arms", "machine", "date"):
        assert k in saved, k
    for arm in ("a", "b"):
        rec = saved["arms"][arm]
        assert rec["seeds"] == [0, 1] and len(rec["final_val_acc"]) == 2 and len(rec["histories"]) == 2
        assert len(rec["best_val_acc"]) == 2 and len(rec["seconds"]) == 2 and rec["params"] > 0
        assert all(0 <= v <= 1 for v in rec["final_val_acc"])
    # Same seed, same arm -> the same run (the seed fixes init and augmentation; data_seed the data and order).
    again = S.run_one(_tiny_study(), "a", 0)
    assert again["final_val_acc"] == saved["arms"]["a"]["final_val_acc"][0]
    assert again["history"]["train_loss"] == saved["arms"]["a"]["histories"][0]["train_loss"]
    # Resume: nothing is re-run; a new seed runs only what is missing.
    logs.clear()
    S.run_study(_tiny_study(), seeds=(0, 1), out=out, log=logs.append)
    assert "0 to run" in logs[0] and len(logs) == 1
    S.run_study(_tiny_study(), seeds=(0, 1, 2), out=out, log=logs.append)
    assert json.load(open(out))["arms"]["b"]["seeds"] == [0, 1, 2]
    table = S.summarize(json.load(open(out)))
    assert "a - b" in table and "95%" in table
    # Another recipe in the same file is refused instead of mixing runs.
    other = _tiny_study()
    other.recipe["epochs"] = 2
    with pytest.raises(ValueError, match="another recipe"):
        S.run_study(other, seeds=(0,), out=out, log=None)


def test_arm_input_size_and_macs_and_that_counting_leaves_the_run_alone(tmp_path, monkeypatch):
    """An arm's img_size resizes its data and sizes its model; MACs per image are recorded, equal to an
    independent count; counting them (a forward pass) must not change the run (count_macs runs in eval mode,
    so the BatchNorm statistics of the model about to be trained stay untouched)."""
    from common.flops import count_macs
    from common.train import build_model

    kw = {**S.HIRI_SMALL, "ds_strides": (2, 1, 2, 1)}         # a tuple: results files hold lists
    study = S.Study(name="tiny-res", paper="hiri_vit", data="nearest-color", img_size=32, question="smoke",
                    arms={"32": {"model": "hiri_vit_s", "model_kwargs": kw},
                          "64": {"model": "hiri_vit_s", "model_kwargs": kw, "img_size": 64}},
                    recipe=dict(epochs=1, batch_size=8, train_size=16, val_size=8, max_steps_per_epoch=2,
                                data_seed=0))
    out = str(tmp_path / "tiny-res.json")
    S.run_study(study, seeds=(0,), out=out, log=None)
    saved = json.load(open(out))
    assert saved["arms"]["64"]["img_size"] == 64 and "img_size" not in saved["arms"]["32"]
    assert saved["arms"]["64"]["histories"][0]["val_acc"] and saved["arms"]["32"]["macs"] > 0
    for arm, size in (("32", 32), ("64", 64)):
        model = build_model("hiri_vit_s", num_classes=4, img_size=size, **kw)
        assert saved["arms"][arm]["macs"] == int(count_macs(model.eval(), size)["total"])
    S.run_study(study, seeds=(0, 1), out=out, log=None)         # resumes: tuples vs lists compare equal
    assert json.load(open(out))["arms"]["64"]["seeds"] == [0, 1]
    with_count = S.run_one(study, "32", 0)
    monkeypatch.setattr(S, "_macs", lambda model, img_size: 0)
    without = S.run_one(study, "32", 0)
    assert with_count["history"]["val_loss"] == without["history"]["val_loss"]
    assert with_count["history"]["train_loss"] == without["history"]["train_loss"]


def test_registered_studies_are_well_formed():
    from common.train import all_models
    from common.data import DATASETS

    models = all_models()
    assert S.STUDIES
    for s in S.STUDIES.values():
        assert s.data in DATASETS and len(s.arms) >= 2 and s.question
        for arm in s.arms.values():
            assert arm["model"] in models, arm


def test_committed_results_have_three_seeds_and_match_their_study():
    for f in sorted(os.listdir(S.RESULTS_DIR)) if os.path.isdir(S.RESULTS_DIR) else []:
        if not f.endswith(".json"):
            continue
        r = json.load(open(os.path.join(S.RESULTS_DIR, f)))
        assert r["study"] in S.STUDIES, f
        head = S._header(S.STUDIES[r["study"]])
        assert r["recipe"] == head["recipe"], f"{f}: recipe no longer matches the registered study"
        assert set(r["arms"]) == set(head["arms"]), f"{f}: arms differ from the registered study"
        for arm, rec in r["arms"].items():
            for k in ("model", "model_kwargs", "cfg", "img_size"):
                assert rec.get(k) == head["arms"][arm].get(k), f"{f}: {arm}: {k} differs from the registered study"
        for arm, rec in r["arms"].items():
            assert len(rec["seeds"]) >= 3, f"{f}: {arm} has fewer than 3 seeds"
            assert len(rec["final_val_acc"]) == len(rec["seeds"]) == len(rec["histories"])


def test_cli_errors(capsys):
    with pytest.raises(SystemExit) as e:
        S.main(["no-such-study"])
    assert e.value.code == 2 and "unknown study" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        S.main(["lkca-fashion", "--seeds", "0"])
    assert e.value.code == 2 and "at least 2 seeds" in capsys.readouterr().err
    assert S.main(["--list"]) == 0 and "lkca-fashion" in capsys.readouterr().out


def test_load_or_run_smoke_without_the_dataset_uses_embedded_data(tmp_path, monkeypatch):
    """CI has no Fashion-MNIST: smoke mode still runs the arms (on nearest-color) and then shows the committed
    results when they are complete, never writing to them."""
    import common.data as D

    monkeypatch.setattr(D, "FASHION_SYSTEM_DIRS", [str(tmp_path / "none")])
    study = S.Study(name="tiny-fm", paper="lkca", data="fashion-mnist", img_size=32, question="smoke",
                    arms={"a": {"model": "vit_05m"}, "b": {"model": "vit_05m_lkca"}},
                    recipe=dict(epochs=1, batch_size=16, train_size=32, val_size=16, data_seed=0,
                                root=str(tmp_path / "no-data")))
    monkeypatch.setitem(S.STUDIES, "tiny-fm", study)
    logs = []
    r = S.load_or_run("tiny-fm", seeds=(0, 1, 2), smoke=True, path=str(tmp_path / "tiny-fm.json"), log=logs.append)
    assert any("nearest-color instead" in line for line in logs)
    assert r["data"] == "nearest-color" and r["arms"]["a"]["seeds"] == [0, 1]
    committed = {"study": "tiny-fm", "data": "fashion-mnist", "img_size": 32, "recipe": study.recipe,
                 "arms": {a: {"seeds": [0, 1, 2]} for a in study.arms}}
    with open(tmp_path / "tiny-fm.json", "w") as f:
        json.dump(committed, f)
    r = S.load_or_run("tiny-fm", seeds=(0, 1, 2), smoke=True, path=str(tmp_path / "tiny-fm.json"), log=logs.append)
    assert r == committed and json.load(open(tmp_path / "tiny-fm.json")) == committed
