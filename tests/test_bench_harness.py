"""The benchmark harness (``bench/compare.py``, ``bench/equal_compute.py``): long runs keep and resume their rows.

A table on the CPU takes hours, so every row is written when it is measured and ``--resume`` keeps the rows
of an earlier run with the same settings: checked end to end on a tiny random prior and the demo photos.
"""
import json

import pytest
import torch

from bench import amortized, compare, equal_compute


def _args(prior_dir, out, *extra):
    return ["--prior", str(prior_dir), "--data", "demo", "--n-images", "2", "--batch", "2", "--samples", "1",
            "--masks", "half", "--lpips-net", "none", "--out", str(out), *extra]


def test_rows_are_written_as_measured_and_resume_keeps_them(tmp_path, tiny_unet_dir):
    out = tmp_path / "table.json"
    compare.main(_args(tiny_unet_dir, out, "--methods", "vipaint2:1,dps:2"))
    first = json.loads(out.read_text())
    assert [(r["method"], r["budget"]) for r in first["rows"]] == [("vipaint2", 1), ("dps", 2)]
    assert not list(tmp_path.glob("*.tmp"))          # written atomically

    compare.main(_args(tiny_unet_dir, out, "--methods", "vipaint2:1,dps:2,red_diff:2", "--resume"))
    second = json.loads(out.read_text())["rows"]
    assert second[:2] == first["rows"]               # kept as measured (timings included), not re-run
    assert second[2]["method"] == "red_diff" and second[2]["nfe_per_image"] == 2

    with pytest.raises(SystemExit, match="samples"):   # other settings: refuse rather than mix two runs
        compare.main(_args(tiny_unet_dir, out, "--methods", "dps:2", "--resume", "--samples", "2"))


def test_finished_rows_without_a_file_is_empty(tmp_path):
    assert compare.finished_rows(tmp_path / "none.json", {}) == {}


def test_amortized_method_needs_an_encoder_for_the_prior(tmp_path, tiny_unet_dir):
    with pytest.raises(ValueError, match="needs an encoder for this prior"):
        compare.main(_args(tiny_unet_dir, tmp_path / "t.json", "--methods", "vipaint2_amortized:1"))


def test_unknown_method_names_the_choices():
    with pytest.raises(SystemExit, match="vipaint2_amortized"):
        compare.parse_method("vipaint3")


def test_equal_compute_resumes_and_plots(tmp_path, tiny_unet_dir):
    base = ["--prior", str(tiny_unet_dir), "--data", "demo", "--n-images", "2", "--batch", "2", "--samples", "1",
            "--mask", "half", "--lpips-net", "none", "--out", str(tmp_path / "ec")]
    equal_compute.main([*base, "--budgets", "dps=2"])
    first = json.loads((tmp_path / "ec.json").read_text())["rows"]
    equal_compute.main([*base, "--budgets", "dps=2,3", "--resume"])
    rows = json.loads((tmp_path / "ec.json").read_text())["rows"]
    assert rows[0] == first[0] and [r["budget"] for r in rows] == [2, 3]
    assert (tmp_path / "ec.png").stat().st_size > 1000


def test_readme_table_groups_by_mask_and_bolds_each_masks_best():
    def row(method, mask, plaus, settings):
        return {"method": method, "budget": None, "mask": mask, "plausibility_mean": plaus,
                "plausibility_mean_se": 0.02, "plausibility_best": 1.0, "settings": settings}

    fit = {"fit": {"n_iter": 25}}
    report = {"samples": 4, "rows": [row("vipaint2", "half", 0.9, fit), row("dps", "half", 0.8, {"n_steps": 100}),
                                     row("vipaint2", "box50", 0.3, fit), row("repaint", "box50", 0.3, {"n_levels": 25})]}
    lines = compare.readme_table(report).splitlines()
    assert "best of 4" in lines[0] and len(lines) == 2 + 4
    assert lines[2].startswith("| half | VIPaint-2, hand-made init (paper) | fit 25 | **0.900 ± 0.020** |")
    assert "| DPS | 100 steps | 0.800 ± 0.020 |" in lines[3]          # not the mask's best: plain
    assert "**0.300 ± 0.020**" in lines[4] and "| RePaint | 25 levels | **0.300 ± 0.020** |" in lines[5]   # a tie


def test_amortized_bench_checks_its_encoder_like_infer_does(tmp_path, tiny_unet_dir):
    """``bench/amortized.py`` looks up its encoder with ``encoder_for``: a K or keypoint mismatch is named."""
    from amortized.encoder import AmortizedEncoder, save_encoder

    save_encoder(AmortizedEncoder(latent_channels=3, n_keypoints=2, width=8, depth=1), tmp_path / "enc",
                 {"keypoints": [550, 400]})
    base = ["--prior", str(tiny_unet_dir), "--data", "demo", "--n-images", "2", "--batch", "2", "--samples", "1",
            "--masks", "half", "--lpips-net", "none", "--budgets", "0,1", "--encoder", str(tmp_path / "enc")]
    amortized.main([*base, "--out", str(tmp_path / "a.json")])
    rows = json.loads((tmp_path / "a.json").read_text())["rows"]
    assert [(r["init"], r["fit_iters"]) for r in rows] == [("hand", 0), ("hand", 1), ("amortized", 0), ("amortized", 1)]
    assert all(r["images"] == 2 and torch.isfinite(torch.tensor(r["elbo"])) for r in rows)
    with pytest.raises(ValueError, match="trained for keypoints"):
        amortized.main([*base, "--keypoints", "700,300", "--out", str(tmp_path / "b.json")])
