"""``nscodec rd``: a real sweep on a generated scene (nscodec-tensorf, 20 steps; two post-hoc codec points sharing one
training, a third point made to fail), resumed; bad input refused before anything runs; and the same points as Ray
tasks on a local Ray instance (loopback, 2 CPUs), which must give the same records.

The Ray test reuses the local sweep's training cache (``WORKDIR/train``) in a fresh work directory, so its tasks
export, decode and evaluate for real but do not train again (the training step is the same code in both backends);
it keeps the suite short. It is skipped when Ray is not installed, except under CI (``CI=true``), where it must run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from nscodec.rd import runner as rd_runner
from nscodec.rd.runner import RECORD_FIELDS, RECORD_MEASURES, run_point, run_sweep
from nscodec.rd.spec import SpecError, build_sweep

STEPS, RAYS = 20, 256
SMALL = {"init-resolution": ["16"], "final-resolution": ["24"], "occupancy-resolution": ["32"]}


@pytest.fixture(autouse=True)
def _test_sweeps_may_run_from_a_dirty_tree(monkeypatch):
    """The sweeps of these tests are not results: they may run from a checkout with uncommitted code."""
    from nscodec.rd.results import ALLOW_DIRTY_ENV

    monkeypatch.setenv(ALLOW_DIRTY_ENV, "1")


def _sweep(scene: Path, work: Path, schemes):
    grid = {"nscodec-tensorf": {"codec-scheme": list(schemes), "codec-bits": ["8"], **SMALL}}
    return build_sweep(["nscodec-tensorf"], [scene], grid, steps=STEPS, rays=RAYS, test_views="1", workdir=work)


@pytest.fixture(scope="module")
def local_sweep(scene, tmp_path_factory):
    """The real local sweep: fp32 and uniform points (one training), and an fp16-zstd point whose training step is
    made to raise. Returns ``(sweep, records, results dir, failing key, calls of the first run)``."""
    work = tmp_path_factory.mktemp("rd")
    sweep = _sweep(scene, work / "work", ["fp32", "uniform", "fp16-zstd"])
    bad = next(p.key for p in sweep.points if dict(p.export_settings)["codec-scheme"] == "fp16-zstd")
    calls = []

    def runner(p, workdir):
        calls.append(p["key"])
        if p["key"] != bad:
            return run_point(p, workdir)
        real = rd_runner._train
        rd_runner._train = lambda *a: (_ for _ in ()).throw(RuntimeError("simulated training crash"))
        try:
            return run_point(p, workdir)
        finally:
            rd_runner._train = real

    from nscodec.rd import results

    with pytest.MonkeyPatch.context() as mp:  # the records' commit: what a clean checkout (CI) reports, dirty or not here
        mp.setattr(results, "git_commit", lambda root=results.ROOT: "abc1234")
        rows = run_sweep(sweep, work / "results", "t", "nscodec rd (test)", progress=False, runner=runner)
    return sweep, rows, work / "results", bad, calls


def test_sweep_records_every_point_with_its_measurements(local_sweep, scene):
    sweep, rows, results, bad, calls = local_sweep
    assert [r["key"] for r in rows] == [p.key for p in sweep.points] and len(rows) == 3
    assert len({p.train_key for p in sweep.points}) == 1  # export-time settings share one training
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["settings"]["codec-scheme"] for r in ok] == ["fp32", "uniform"]
    train_pixels = 16 * 48 * 48  # the fixture scene: 16 training views of 48²
    for r in ok:
        assert set(RECORD_FIELDS + RECORD_MEASURES) <= set(r)
        assert r["bytes"] == os.path.getsize(r["nsc"]) > 0
        assert math.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1
        assert r["steps"] == STEPS and r["rays_per_batch"] == RAYS and r["test_views"] == 1
        assert r["epochs"] == pytest.approx(STEPS * RAYS / train_pixels)
        assert r["rays_per_second"] == pytest.approx(STEPS * RAYS / r["train_seconds"])
        assert r["peak_rss_mb"] > 100 and r["decode_seconds"] > 0
        assert r["command"].startswith("ns-train nscodec-tensorf ") and "--max-num-iterations 20" in r["command"]
        assert r["git_commit"] and r["error"] is None
    assert ok[0]["bytes"] > ok[1]["bytes"]  # fp32 vs 8-bit uniform of the same model
    assert [r["train_reused"] for r in ok] == [False, True]
    assert ok[1]["baseline_key"] is None or ok[1]["baseline_key"] in {r["key"] for r in rows}


def test_a_failed_point_is_recorded_and_the_sweep_goes_on(local_sweep):
    _, rows, results, bad, calls = local_sweep
    failed = [r for r in rows if r["status"] != "ok"]
    assert [r["key"] for r in failed] == [bad]
    assert "simulated training crash" in failed[0]["error"] and "psnr" not in failed[0]
    saved = json.loads((results / "t.json").read_text())
    assert saved["git_commit"] and saved["command"] == "nscodec rd (test)"
    assert [r["status"] for r in saved["rows"]] == [r["status"] for r in rows]
    table = (results / "t.md").read_text()
    assert "failed: " in table and "simulated training crash" in table and table.count("| ok |") == 2
    assert (results / "t.png").stat().st_size > 1000


def test_a_rerun_skips_finished_points_and_retries_failed_ones(local_sweep):
    sweep, rows, results, bad, _ = local_sweep
    calls = []

    def runner(p, workdir):
        calls.append(p["key"])
        return {**rows[[r["key"] for r in rows].index(p["key"])], "error": "still failing"}

    again = run_sweep(sweep, results, "t", "nscodec rd (test)", progress=False, runner=runner)
    assert calls == [bad]  # the two finished points were not run again
    assert [r.get("resumed") for r in again if r["status"] == "ok"] == [True, True]
    assert [r["bytes"] for r in again if r["status"] == "ok"] == [r["bytes"] for r in rows if r["status"] == "ok"]


@pytest.mark.parametrize("argv, message", [
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--methods", "ectensorf", "--set", "ectensorf:rate-lamda=1e-5"], "unknown setting 'rate-lamda'"),
    (["--methods", "vqad", "--set", "vqad:grid-mode=octree"], "bad value 'octree' for grid-mode"),
    (["--methods", "ectensorf", "--posthoc", "uniform"], "unknown codec 'uniform'"),
    (["--methods", "ectensorf", "--test-views", "0"], "--test-views"),
    (["--methods", "ectensorf", "--budget", "-2"], "--budget must be a positive multiple"),
    (["--methods", "ectensorf", "--budget", "four"], "--budget must be a number"),
    (["--methods", "ectensorf", "--budget", "4", "--steps", "100"], "not both"),
])
def test_bad_input_is_one_error_before_anything_runs(argv, message, scene, tmp_path, capsys):
    from nscodec.cli import main

    work = tmp_path / "work"
    assert main(["rd", "--data", str(scene), "--workdir", str(work), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nscodec: error:") and message in err[0]
    assert not work.exists()


def test_a_missing_scene_is_named(tmp_path):
    with pytest.raises(SpecError, match="scene directory not found: .*nowhere"):
        build_sweep(["ectensorf"], [tmp_path / "nowhere"], workdir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_ray_backend_gives_the_same_records(local_sweep, scene, tmp_path, monkeypatch):
    try:
        import ray
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("Ray is not installed under CI: the Makefile's setup installs the 'cluster' extra")
        pytest.skip("Ray not installed (pip install 'nscodec[cluster]'); under CI=true this test runs")
    sweep_local, rows, _, _, _ = local_sweep
    work = tmp_path / "work"
    shutil.copytree(sweep_local.workdir / "train", work / "train")  # the training cache; points run afresh
    sweep = _sweep(scene, work, ["fp32", "uniform"])
    # Ray starts its workers at nice 15: beside another training they would get next to no CPU and the test would
    # time out; at the test's own priority it finishes, slower, on a loaded machine too
    monkeypatch.setenv("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        ray_rows = run_sweep(sweep, tmp_path / "results", "t", "nscodec rd --backend ray (test)", backend="ray", progress=False)
    finally:
        ray.shutdown()
    local = {r["key"]: r for r in rows if r["status"] == "ok"}
    assert [r["status"] for r in ray_rows] == ["ok", "ok"], [r.get("error") for r in ray_rows]
    assert {r["key"] for r in ray_rows} == set(local)
    for r in ray_rows:
        assert set(r) == set(local[r["key"]]), set(r) ^ set(local[r["key"]])
        assert r["bytes"] == local[r["key"]]["bytes"] and r["psnr"] == pytest.approx(local[r["key"]]["psnr"], abs=1e-6)
        assert Path(r["nsc"]).is_relative_to(work)
    saved = json.loads((tmp_path / "results" / "t.json").read_text())
    assert saved["backend"] == "ray" and len(saved["rows"]) == 2


def test_spec_file_and_flags_expand_to_the_same_points(scene, tmp_path, capsys):
    """A spec file and the equivalent flags give the same points (keys); ectensorf brings its equal-budget base and
    the post-hoc codecs, which share one training."""
    from nscodec.cli import main

    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({"methods": ["ectensorf"], "set": {"ectensorf": {"rate-lambda": ["1e-5", "3e-5"]}},
                                "scenes": [str(scene)], "steps": 30, "test_views": 2, "posthoc": "uniform8,kmeans6"}))
    assert main(["rd", "--spec", str(spec), "--dry-run"]) == 0
    from_file = capsys.readouterr().out
    assert main(["rd", "--data", str(scene), "--methods", "ectensorf", "--set", "ectensorf:rate-lambda=1e-5,3e-5",
                 "--steps", "30", "--test-views", "2", "--posthoc", "uniform8,kmeans6", "--dry-run"]) == 0
    from_flags = capsys.readouterr().out
    assert from_file == from_flags
    assert from_file.strip().endswith("5 points, 3 trainings")  # 2 λ + fp32 base + 2 post-hoc of that base
    assert "--pipeline.model.stage1-steps 20" in from_file and "--pipeline.model.rate-lambda 3e-5" in from_file
    sweep = build_sweep(["ectensorf"], [scene], {"ectensorf": {"rate-lambda": ["1e-5"]}}, steps=30, workdir=tmp_path / "w",
                        posthoc=[{"codec-scheme": "uniform", "codec-bits": "8"}])
    base = [p for p in sweep.points if p.method == "nscodec-tensorf"]
    assert {p.role for p in base} == {"baseline", "posthoc"} and len({p.train_key for p in base}) == 1
    ec = next(p for p in sweep.points if p.method == "ectensorf")
    assert ec.baseline_key == next(p.key for p in base if p.role == "baseline")
    assert not (tmp_path / "w").exists()


def test_a_capture_scene_trains_through_its_dataparser(scene, tmp_path, capsys):
    """A scene's dataparser comes from its layout (LLFF → ``llff-data``, with ``--downscale-factor`` when only
    ``images_<k>/`` exists) or from the spec file with its options; it ends the ns-train command and the train key
    (Blender points keep theirs); a bad dataparser or option is one error before anything runs."""
    from nscodec.cli import main
    from nscodec.rd.spec import parse_scene
    from nscodec.scenes.captures import generate_capture_scene

    fwd = generate_capture_scene(tmp_path / "fwd", "forward", width=16, height=12, n_views=4)
    (fwd / "images").rename(fwd / "images_2")
    assert parse_scene(fwd).dataparser == ("llff-data", "--downscale-factor", "2")
    assert parse_scene(scene).dataparser == ()
    spec = tmp_path / "s.yaml"
    spec.write_text(f"methods: [shacira]\nscale: 0.5\nscenes:\n  - {scene}\n"
                    f"  - {{data: {fwd}, dataparser: llff-data, args: '--downscale-factor 2 --eval-interval 3', scale: 1.0, name: f}}\n")
    assert main(["rd", "--spec", str(spec), "--no-baselines", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    cmds = [ln.strip() for ln in out if ln.strip().startswith("ns-train")]
    assert len(cmds) == 2 and "llff-data" not in cmds[0]
    assert cmds[1].endswith("llff-data --downscale-factor 2 --eval-interval 3")
    assert "--pipeline.datamanager.camera-res-scale-factor 1.0" in cmds[1] and out[2].startswith("f-shacira")
    blender = build_sweep(["shacira"], [scene], baselines=False, scale=0.5, workdir=tmp_path / "w").points[0]
    assert blender.key in out[0]
    import hashlib  # Blender points hash what they always hashed: caches of earlier sweeps are found again
    old = json.dumps([blender.scene, blender.method, list(blender.train_flags), blender.seed, blender.scale])
    assert blender.train_key.endswith(hashlib.sha1(old.encode()).hexdigest()[:10])
    spec.write_text(f"methods: [shacira]\nscenes:\n  - {{data: {fwd}, dataparser: llff-data, args: --downscale-factr 2}}\n")
    assert main(["rd", "--spec", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "bad options for llff-data" in err and "Unrecognized options: --downscale-factr" in err
    with pytest.raises(SpecError, match="unknown dataparser 'llff'"):
        build_sweep(["shacira"], [{"data": str(fwd), "dataparser": "llff"}], workdir=tmp_path / "w")
    with pytest.raises(SpecError, match="is not a scene"):
        build_sweep(["shacira"], [tmp_path], workdir=tmp_path / "w")


def test_bjontegaard_deltas_of_curves_with_known_gaps():
    """Half the bytes at every PSNR is a BD-rate of -50 %; +1 dB at every size a BD-PSNR of +1 dB; curves that do not
    overlap have none; points off the envelope are dropped."""
    from nscodec.rd.bd import bd_psnr, bd_rate, envelope

    ref = [(1e5, 25.0), (2e5, 27.0), (4e5, 28.5), (8e5, 29.3)]
    half = [(b / 2, p) for b, p in ref]
    up = [(b, p + 1.0) for b, p in ref]
    assert bd_rate(ref, half) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(ref, ref) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(ref, up) == pytest.approx(1.0, abs=1e-6)
    assert bd_psnr(ref, half) > 0  # smaller at the same quality: better at the same size
    assert bd_rate(ref, [(1e9, 40.0), (2e9, 41.0)]) is None  # no PSNR range in common
    assert bd_psnr(ref, [(5e4, 20.0)]) is None  # one point is no curve
    assert envelope([(3e5, 26.0), (1e5, 25.0), (2e5, 27.0), (2e5, 26.5)]) == [(1e5, 25.0), (2e5, 27.0)]


def test_results_from_a_dirty_tree_are_refused_unless_allowed(tmp_path, monkeypatch):
    """Figures are re-made from a commit: the results writer refuses uncommitted code, or marks its rows dirty."""
    from nscodec.errors import NscError
    from nscodec.rd import results

    monkeypatch.setattr(results, "git_commit", lambda root=results.ROOT: "abc1234-dirty")
    monkeypatch.delenv(results.ALLOW_DIRTY_ENV, raising=False)
    with pytest.raises(NscError, match="uncommitted code changes .*abc1234-dirty"):
        results.write_results(tmp_path / "r.json", "r", [{"psnr": 30.0}], "cmd")
    assert not (tmp_path / "r.json").exists()
    monkeypatch.setenv(results.ALLOW_DIRTY_ENV, "1")
    saved = json.loads(results.write_results(tmp_path / "r.json", "r", [{"psnr": 30.0}, {"git_commit": "abc1234"}], "cmd").read_text())
    assert [r.get("dirty") for r in saved["rows"]] == [True, None]


def _row(method, scene, psnr, nbytes, role="method", key=None, base=None, **settings):
    return {"key": key or f"{scene}-{method}-{psnr}", "method": method, "scene": scene, "psnr": psnr, "bytes": nbytes,
            "role": role, "status": "ok", "seed": 0, "settings": settings, "baseline_key": base, "decode_seconds": 0.25,
            "git_commit": "abc1234"}


def test_the_readme_status_is_one_line_per_method_from_the_records(tmp_path):
    """The status table generated from records: one line per CPU method (paper, status, its preset point on lego and
    on the real capture against its own base, decode ms), each under 300 characters; dirty rows are refused."""
    from nscodec.errors import NscError
    from nscodec.rd.report import README_BEGIN, README_END, bd_table, readme_status, update_readme

    rows = [_row("nscodec-tensorf", "lego", 31.8, 19_963_618, "baseline", key="base-lego", **{"codec-scheme": "fp32"}),
            _row("nscodec-tensorf", "lego", 25.1, 263_007, "posthoc", **{"codec-scheme": "kmeans"}),
            _row("ectensorf", "lego", 31.3, 360_490, base="base-lego", **{"rate-lambda": "3e-5"}),
            _row("ectensorf", "lego", 30.1, 180_976, base="base-lego", **{"rate-lambda": "1e-3"}),
            _row("nscodec-tensorf", "flower", 27.1, 19_964_574, "baseline", key="base-flower", **{"codec-scheme": "fp32"}),
            _row("ectensorf", "flower", 25.7, 602_124, base="base-flower", **{"rate-lambda": "3e-5"})]
    table = readme_status(rows)
    lines = [ln for ln in table.splitlines() if ln.startswith("| `")]
    assert [ln.split("`")[1] for ln in lines] == ["nscodec-tensorf", "ectensorf", "shacira", "vqad", "codecnerf"]
    assert all(len(ln) < 300 for ln in table.splitlines())
    ec = lines[1]
    assert "31.30 dB @ 360 KB (-0.50 dB, 1/55 of its base)" in ec and "25.70 dB @ 602 KB" in ec and "250 ms" in ec
    assert "abc1234" in table
    assert "| lego | ectensorf | 2 |" in bd_table(rows)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\nold\n{README_END}\ntail\n")
    update_readme(readme, table)
    assert "old" not in readme.read_text() and readme.read_text().endswith(f"{README_END}\ntail\n")
    with pytest.raises(NscError, match="dirty commit"):
        readme_status(rows + [{**rows[2], "key": "d", "git_commit": "abc1234-dirty"}])


def test_report_only_merges_sweeps_into_one_record_with_a_plot_per_scene(tmp_path, monkeypatch):
    """``--report-only --name a,b --merge m``: one record of both sweeps (a point in both: the later row), its table
    with Bjøntegaard deltas, and one RD plot per scene."""
    pytest.importorskip("matplotlib")
    from nscodec.cli import main
    from nscodec.rd import results

    monkeypatch.setattr(results, "git_commit", lambda root=results.ROOT: "abc1234")
    full = dict(series="s", ssim=0.9, test_views=5, train_seconds=10.0, rays_per_second=1e4, epochs=1.0,
                peak_rss_mb=100.0, resolution="10x10")

    def row(*a, date="2026-01-01", **kw):
        return {**_row(*a, **kw), **full, "date": date}

    a = [row("nscodec-tensorf", "lego", 31.8, 19_963_618, "baseline", key="base-lego"),
         row("ectensorf", "lego", 31.0, 360_000, key="ec-lego", base="base-lego")]
    b = [row("ectensorf", "lego", 31.3, 350_000, key="ec-lego", base="base-lego", date="2026-02-01"),
         row("nscodec-tensorf", "flower", 27.1, 19_964_574, "baseline", key="base-flower"),
         row("ectensorf", "flower", 25.7, 602_124, key="ec-flower", base="base-flower")]
    results.write_results(tmp_path / "a.json", "a", a, "cmd a")
    results.write_results(tmp_path / "b.json", "b", b, "cmd b")
    assert main(["rd", "--report-only", "--name", "a,b", "--merge", "m", "--results", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["sources"] == ["a", "b"] and saved["points"] == 4
    assert {r["key"]: r["psnr"] for r in saved["rows"]}["ec-lego"] == 31.3  # the later measurement of the point
    table = (tmp_path / "m.md").read_text()
    assert table.count("| ok |") == 4 and "Bjøntegaard" in table
    assert (tmp_path / "m-lego.png").stat().st_size > 1000 and (tmp_path / "m-flower.png").stat().st_size > 1000
    assert not (tmp_path / "a.md").exists()  # merging writes the merged outputs only


def test_a_budget_multiplies_each_presets_steps_and_its_base_trains_as_long(scene, tmp_path):
    """``--budget 4``: every method trains 4× its own preset's steps (vqad's 3,600 and shacira's 1,800 alike), its
    schedules end at the new last step, its uncompressed base trains as long; budget 1 leaves the points' keys alone."""
    from nscodec.rd.spec import _flag_values, _preset

    methods = ["shacira", "vqad", "ectensorf"]
    one = build_sweep(methods, [scene], workdir=tmp_path)
    four = build_sweep(methods, [scene], budget=4, workdir=tmp_path)
    assert [p.key for p in build_sweep(methods, [scene], budget=1.0, workdir=tmp_path).points] == [p.key for p in one.points]
    assert not {p.key for p in one.points} & {p.key for p in four.points}
    for p in four.points:
        vals = _flag_values(p.train_flags)
        owner = p.method if p.role == "method" else next(q.method for q in four.points if q.baseline_key == p.key)
        total = 4 * _preset(owner).max_num_iterations
        assert vals["max-num-iterations"] == str(total), (p.key, vals)
        assert all(v == str(total) for k, v in vals.items() if k.endswith("scheduler.max-steps")), vals
    ec = next(p for p in four.points if p.method == "ectensorf")
    assert _flag_values(ec.train_flags)["pipeline.model.stage1-steps"] == str(4 * _preset("ectensorf").pipeline.model.stage1_steps)
