"""The benchmark harness (``bench/compare.py``, ``bench/equal_compute.py``): long runs keep and resume their rows.

A table on the CPU takes hours, so every row is written when it is measured and ``--resume`` keeps the rows
of an earlier run with the same settings: checked end to end on a tiny random prior and the demo photos.
"""
import json

import pytest

from bench import compare, equal_compute


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
