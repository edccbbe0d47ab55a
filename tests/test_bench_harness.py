"""The benchmark harness (``python -m bench.compare``, ``bench.equal_compute``, ``bench.amortized``): long runs keep
and resume their rows, every bench runs the one entry point (``vipaint.Inpainter``) and records its run the same way.

A table on the CPU takes hours, so every row is written when it is measured and ``--resume`` keeps the rows
of an earlier run with the same settings: checked end to end on a tiny random prior and the demo photos.
"""
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch

from bench import amortized, compare, equal_compute, report

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _args(prior_dir, out, *extra):
    return ["--prior", str(prior_dir), "--data", "demo", "--n-images", "2", "--batch", "2", "--samples", "1",
            "--masks", "half", "--lpips-net", "none", "--out", str(out), *extra]


def test_rows_are_written_as_measured_and_resume_keeps_them(tmp_path, tiny_unet_dir):
    out = tmp_path / "table.json"
    compare.main(_args(tiny_unet_dir, out, "--methods", "vipaint2:1,dps:2"))
    first = json.loads(out.read_text())
    assert [(r["method"], r["budget"]) for r in first["rows"]] == [("vipaint2", 1), ("dps", 2)]
    assert not [p for p in tmp_path.iterdir() if p.name != "table.json"]   # written atomically: no temp file left
    assert first["command"].startswith("python -m bench.compare --prior ")   # the header of every bench
    assert first["commit"] and "dirty" in first and first["device"].startswith("cpu: ") and first["torch"]
    assert first["rows"][0]["settings"]["initialiser"] == "hand"            # vipaint2: the paper's hand-made λ
    assert first["rows"][0]["settings"]["refine"]["scale"] == 1.0           # resolved: no tuned ζ for this prior

    compare.main(_args(tiny_unet_dir, out, "--methods", "vipaint2:1,dps:2,red_diff:2", "--resume"))
    second = json.loads(out.read_text())["rows"]
    assert second[:2] == first["rows"]               # kept as measured (timings included), not re-run
    assert second[2]["method"] == "red_diff" and second[2]["nfe_per_image"] == 2

    with pytest.raises(SystemExit, match="samples"):   # other settings: refuse rather than mix two runs
        compare.main(_args(tiny_unet_dir, out, "--methods", "dps:2", "--resume", "--samples", "2"))

    # A row measured with other resolved settings (say, before the prior shipped a tuned guidance weight) is not
    # kept either, even when the command line is the same.
    stale = json.loads(out.read_text())
    stale["rows"][0]["settings"]["refine"]["scale"] = 2.0
    out.write_text(json.dumps(stale))
    with pytest.raises(SystemExit, match="other settings"):
        compare.main(_args(tiny_unet_dir, out, "--methods", "vipaint2:1,dps:2", "--resume"))


def test_finished_rows_without_a_file_is_empty(tmp_path):
    assert compare.finished_rows(tmp_path / "none.json", {}) == {}


def test_amortized_method_needs_an_encoder_for_the_prior(tmp_path, tiny_unet_dir):
    with pytest.raises(ValueError, match="needs an encoder for this prior"):
        compare.main(_args(tiny_unet_dir, tmp_path / "t.json", "--methods", "vipaint2_amortized:1"))


def test_amortized_method_takes_an_encoder_and_records_it(tmp_path, tiny_unet_dir):
    """``--encoder`` (an unshipped one, say a run's export) is used and recorded, so --resume cannot mix two."""
    from amortized.encoder import AmortizedEncoder, save_encoder

    for name in ("a", "b"):
        save_encoder(AmortizedEncoder(latent_channels=3, n_keypoints=2, width=8, depth=1), tmp_path / name,
                     {"keypoints": [550, 400]})
    out = tmp_path / "t.json"
    compare.main(_args(tiny_unet_dir, out, "--methods", "vipaint2_amortized:0", "--encoder", str(tmp_path / "a")))
    row = json.loads(out.read_text())["rows"][0]
    assert row["settings"]["initialiser"] == "amortized" and row["settings"]["encoder"] == str(tmp_path / "a")
    assert row["failed_images"] == 0
    with pytest.raises(SystemExit, match="other settings"):
        compare.main(_args(tiny_unet_dir, out, "--methods", "vipaint2_amortized:0", "--encoder", str(tmp_path / "b"),
                           "--resume"))


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
    # Two runs (say a pixel and a latent prior) on one figure; runs of other images or masks are refused.
    equal_compute.main(["--plot", str(tmp_path / "ec.json"), str(tmp_path / "ec.json"), "--out", str(tmp_path / "both")])
    assert (tmp_path / "both.png").stat().st_size > 1000
    other = json.loads((tmp_path / "ec.json").read_text())
    other["mask"] = "box50"
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="same images and mask"):
        equal_compute.main(["--plot", str(tmp_path / "ec.json"), str(tmp_path / "other.json"), "--out", str(tmp_path / "x")])


def test_equal_compute_curves_share_a_colour_per_method_and_a_style_per_run():
    def row(method, budget, seconds, run):
        return {"method": method, "budget": budget, "seconds_per_image": seconds, "lpips_mean": seconds / 10,
                "lpips_mean_se": 0.01, "curve": f"{run}: {method}", "linestyle": {"pixel": "-", "latent": "--"}[run]}

    rows = [row("dps", 250, 12.0, "pixel"), row("dps", 50, 2.0, "pixel"), row("vipaint2", 10, 2.5, "pixel"),
            row("dps", 100, 4.0, "latent"), row("vipaint2_amortized", 0, 3.9, "latent")]
    got = equal_compute.curves(rows, "lpips_mean")
    assert list(got) == ["pixel: dps", "pixel: vipaint2", "latent: dps", "latent: vipaint2_amortized"]
    assert got["pixel: dps"]["points"] == [(2.0, 0.2, 0.01, 50), (12.0, 1.2, 0.01, 250)]   # sorted by seconds
    assert got["pixel: dps"]["colour"] == got["latent: dps"]["colour"] == "C0"
    assert len({c["colour"] for c in got.values()}) == 3
    assert [c["linestyle"] for c in got.values()] == ["-", "-", "--", "--"]
    plain = equal_compute.curves([{k: v for k, v in r.items() if k not in ("curve", "linestyle")} for r in rows[:3]],
                                 "lpips_mean")   # one run: a curve per method, solid
    assert list(plain) == ["dps", "vipaint2"] and {c["linestyle"] for c in plain.values()} == {"-"}


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
    for r, lp in zip(report["rows"], (0.2, 0.1, 0.3, 0.4)):   # natural images: LPIPS heads the table, lowest best
        r.update(lpips_mean=lp, lpips_mean_se=0.01)
    lines = compare.readme_table({**report, "data": "cifar10"}).splitlines()
    assert "| DPS | 100 steps |" in lines[3] and "**0.100 ± 0.010**" in lines[3] and "**" not in lines[2]
    assert "**" not in compare.readme_table({**report, "data": "mnist"}).splitlines()[3]   # digits: plausibility


def test_amortized_bench_checks_its_encoder_like_infer_does(tmp_path, tiny_unet_dir):
    """``bench/amortized.py`` looks up its encoder with ``encoder_for``: a K or keypoint mismatch is named."""
    from amortized.encoder import AmortizedEncoder, save_encoder

    save_encoder(AmortizedEncoder(latent_channels=3, n_keypoints=2, width=8, depth=1), tmp_path / "enc",
                 {"keypoints": [550, 400]})
    base = ["--prior", str(tiny_unet_dir), "--data", "demo", "--n-images", "2", "--batch", "2", "--samples", "1",
            "--masks", "half", "--lpips-net", "none", "--budgets", "0,1", "--encoder", str(tmp_path / "enc")]
    amortized.main([*base, "--out", str(tmp_path / "a.json")])
    result = json.loads((tmp_path / "a.json").read_text())
    rows = result["rows"]
    assert [(r["init"], r["fit_iters"]) for r in rows] == [("hand", 0), ("hand", 1), ("amortized", 0), ("amortized", 1)]
    assert all(r["images"] == 2 and torch.isfinite(torch.tensor(r["elbo"])) for r in rows)
    assert result["command"].startswith("python -m bench.amortized ")
    with pytest.raises(ValueError, match="trained for keypoints"):
        amortized.main([*base, "--keypoints", "700,300", "--out", str(tmp_path / "b.json")])


def test_amortized_bench_counts_what_the_pipeline_counts(tmp_path, tiny_unet_dir):
    """Network evaluations per digit are ``Restoration.nfe`` of the one entry point, not a count of the bench's own."""
    from amortized.encoder import AmortizedEncoder, save_encoder
    from vipaint.fit import FitConfig
    from vipaint.jobs.api import Inpainter
    from vipaint.operators import OperatorConfig
    from vipaint.pipeline import VIPaintConfig
    from vipaint.refine import RefineConfig

    save_encoder(AmortizedEncoder(latent_channels=3, n_keypoints=2, width=8, depth=1), tmp_path / "enc",
                 {"keypoints": [550, 400]})
    amortized.main(["--prior", str(tiny_unet_dir), "--data", "demo", "--n-images", "2", "--batch", "2", "--samples",
                    "1", "--masks", "half", "--lpips-net", "none", "--budgets", "0,2", "--encoder", str(tmp_path / "enc"),
                    "--vipaint-set", "refine.n_steps=2", "--out", str(tmp_path / "a.json")])
    nfe = {(r["init"], r["fit_iters"]): r["nfe_per_image"] for r in json.loads((tmp_path / "a.json").read_text())["rows"]}
    for n in (0, 2):
        cfg = VIPaintConfig(n_eval_samples=amortized.EVAL_SAMPLES, fit=FitConfig(n_iter=n),
                            refine=RefineConfig(n_steps=2))
        solver = Inpainter(str(tiny_unet_dir), vipaint=cfg, operator=OperatorConfig(), n_samples=1, init="hand")
        x = torch.zeros(1, 3, 16, 16)
        assert nfe[("hand", n)] == nfe[("amortized", n)] == solver(x, torch.ones(1, 1, 16, 16)).nfe
    assert nfe[("hand", 2)] > nfe[("hand", 0)]


def test_report_header_and_atomic_json(tmp_path):
    head = report.header("compare", ["--budgets", "vipaint2=5,10 dps=20"])
    assert head["command"] == "python -m bench.compare --budgets 'vipaint2=5,10 dps=20'"   # pasteable as is
    assert head["commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", head["commit"])
    assert datetime.fromisoformat(head["date"]).utcoffset().total_seconds() == 0
    report.write_json(tmp_path / "sub" / "r.json", {**head, "value": float("nan")})
    assert json.loads((tmp_path / "sub" / "r.json").read_text())["value"] == "NaN"   # strict JSON
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["r.json"]


def test_benches_run_as_modules_without_path_patches():
    """``python -m bench.NAME`` from the repository root: no ``sys.path`` patches, usage strings say so."""
    for path in BENCH.glob("*.py"):
        src = path.read_text()
        assert "sys.path" not in src and "E402" not in src, path.name
        assert "python bench/" not in src, path.name
    out = subprocess.run([sys.executable, "-m", "bench.compare", "--help"], cwd=BENCH.parent, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "python -m bench.compare" in out.stdout and "bench/results/compare.json" in out.stdout


def test_readme_lists_which_file_backs_which_table():
    """``bench/results/`` holds exactly the files of ``bench/README.md``'s list "which file backs which table", and
    every result file the README quotes outside that list (commands, links) is there too, or said to be deleted."""
    readme = (BENCH / "README.md").read_text()
    listing = readme.split("## Which file backs which table", 1)[1].split("\n\n", 2)[1]   # the table after the heading
    names = lambda text: set(re.findall(r"results/([\w.-]+\.(?:json|png))", text))  # noqa: E731
    kept = {p.name for p in (BENCH / "results").iterdir()}
    assert names(listing) == kept
    for line in readme.splitlines():
        missing = names(line) - kept
        assert not missing or "deleted" in line, line


def test_deblurring_and_super_resolution_run_as_tasks(tmp_path, tiny_unet_dir, capsys):
    from amortized.encoder import AmortizedEncoder, save_encoder

    # RePaint and an encoder trained on inpainting refuse the operator: those pairs are skipped, the rest measured.
    save_encoder(AmortizedEncoder(latent_channels=3, n_keypoints=2, width=8, depth=1), tmp_path / "enc",
                 {"keypoints": [550, 400]})
    out = tmp_path / "tasks.json"
    args = _args(tiny_unet_dir, out, "--methods", "vipaint2:1,dps:2,repaint:2,vipaint2_amortized:0,mean_fill",
                 "--encoder", str(tmp_path / "enc"))
    args[args.index("--masks") + 1] = "blur,sr2"
    compare.main(args)
    printed = capsys.readouterr().out
    assert "repaint skipped on blur: RePaint is defined for inpainting" in printed
    assert "vipaint2_amortized skipped on sr2: the encoder in" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["mask"]) for r in rows] == [("vipaint2", "blur"), ("dps", "blur"), ("mean_fill", "blur"),
                                                         ("vipaint2", "sr2"), ("dps", "sr2"), ("mean_fill", "sr2")]
    assert rows[0]["settings"]["likelihood"] and rows[0]["nfe_per_image"] > 0
    # The floor returns the observation as an image: seen through the operator again it is blurred twice (blur,
    # A y != y) or exactly y (sr2: box-averaging the nearest-upsampled y gives y back).
    floor_blur, floor_sr = rows[2], rows[5]
    assert floor_sr["consistency_rms"] < 1e-6 < floor_blur["consistency_rms"]


def test_ablations_change_one_setting_each_pair_with_the_defaults_and_resume(tmp_path, tiny_unet_dir):
    from bench import ablations

    out = tmp_path / "abl.json"
    args = ["--prior", str(tiny_unet_dir), "--data", "demo", "--n-images", "2", "--batch", "2", "--samples", "2",
            "--masks", "half", "--lpips-net", "none", "--out", str(out), "--variants", "default,K1,no_hier_kl"]
    ablations.main([*args[:-1], "default,K1"])
    first = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in first] == ["default", "K1"]
    assert first[0]["settings"]["keypoints"] == [550, 400] and first[1]["settings"]["keypoints"] == [400]
    assert first[1]["nfe_per_image"] < first[0]["nfe_per_image"]      # one keypoint fewer in every fit iteration
    ablations.main([*args, "--resume"])
    rows = json.loads(out.read_text())["rows"]
    assert rows[:2] == first and rows[2]["settings"]["fit"]["beta_hier"] == 0
    table = ablations.readme_table(json.loads(out.read_text()))
    assert table.count("\n") == 4 and "no KL between keypoints" in table   # header, rule, three variants


def test_ablations_from_the_amortized_base_do_not_resume_hand_made_rows(tmp_path, tiny_unet_dir):
    from amortized.encoder import AmortizedEncoder, save_encoder
    from bench import ablations

    save_encoder(AmortizedEncoder(latent_channels=3, n_keypoints=2, width=8, depth=1), tmp_path / "enc",
                 {"keypoints": [550, 400]})
    out = tmp_path / "abl.json"
    args = ["--prior", str(tiny_unet_dir), "--data", "demo", "--n-images", "2", "--batch", "2", "--samples", "2",
            "--masks", "half", "--lpips-net", "none", "--out", str(out), "--variants", "default,zeta_1"]
    ablations.main(args)
    hand_made = json.loads(out.read_text())["rows"]
    ablations.main([*args, "--method", "vipaint2_amortized", "--encoder", str(tmp_path / "enc"), "--resume"])
    rows = json.loads(out.read_text())["rows"]
    assert [r["settings"]["initialiser"] for r in hand_made] == ["hand"] * 2
    assert [r["settings"]["initialiser"] for r in rows] == ["amortized"] * 2     # measured again, not kept
    assert [r["overrides"] for r in rows] == [[], ["refine.scale=1"]]


def test_kid_column_scores_the_composites_against_the_reference(tmp_path, tiny_unet_dir, monkeypatch):
    # Features stubbed by per-channel means (the VGG path has its own test, tests/test_kid.py): the row's KID is
    # that of the composited samples, observed pixels pasted back, against the reference set's features.
    feats = lambda x, backbone=None: x.flatten(2).mean(2).double()   # noqa: E731
    ref = feats(torch.rand(12, 3, 8, 8) * 2 - 1)
    reference = compare.kid_reference
    monkeypatch.setattr(compare, "vgg_features", feats)
    monkeypatch.setattr(compare, "kid_reference", lambda args: ref)
    out = tmp_path / "kid.json"
    compare.main(_args(tiny_unet_dir, out, "--methods", "mean_fill", "--samples", "2", "--kid"))
    row = json.loads(out.read_text())["rows"][0]
    x = compare.load_images("demo", 2, 16, None)[0]
    keep = compare.masks_for("half", 2, 16, 0)
    from vipaint.operators import Inpainting

    y = Inpainting(keep, 0.05).observe(x, torch.Generator().manual_seed(0))   # the batch's observation noise
    fill = (keep * y).flatten(2).sum(2) / keep.flatten(2).sum(2)          # the floor: the observed mean colour
    comp = keep * x + (1 - keep) * fill[..., None, None]
    assert row["kid"] == pytest.approx(compare.kid(feats(comp.repeat_interleave(2, 0)), ref), rel=1e-4, abs=1e-6)
    with pytest.raises(SystemExit, match="dev split"):
        reference(compare.argparse.Namespace(data="mnist", split="eval"))


def test_paired_se_pairs_image_by_image_and_skips_nan():
    from bench.tables import paired_se

    a = {"per_image": {"k": [1.0, 2.0, "NaN", 4.0]}}
    b = {"per_image": {"k": [0.5, 1.0, 0.0, 3.0]}}
    mean, se = paired_se(a, b, "k")
    d = torch.tensor([0.5, 1.0, 1.0])
    assert mean == pytest.approx(float(d.mean())) and se == pytest.approx(float(d.std() / 3 ** 0.5))
