"""Run a sweep's points — here one after the other (``local``), or as Ray tasks (``ray``) — and write its results.

One point (:func:`run_point`): train (``python -m nscodec.rd.worker train``, cached per training: points that differ
only in export settings share it, under a file lock), export the ``.nsc`` (a fresh process), decode and evaluate it
(another fresh process), and return its record. Nothing a point does raises: a failure becomes a record with
``status: "failed"`` and ``error``, and the sweep goes on.

Layout of the work directory::

    WORKDIR/train/<train key>/<method>/run/config.yml   the ns-train run (+ train.json, train.log)
    WORKDIR/points/<point key>/scene.nsc                 the point's file (+ export.json, eval.json, *.log)
    WORKDIR/points/<point key>/record.json               its record: a finished point is skipped on a re-run

Resuming: a point whose ``record.json`` says ``ok`` is not run again; a failed point is always retried.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from nscodec.rd.results import git_commit, ns_train_flags, utc_now, write_results
from nscodec.rd.spec import Point, Sweep, scene_views

__all__ = ["run_point", "run_sweep", "markdown_table", "write_outputs", "PointFailed"]

#: fields every record has (ok or failed); ok records also have the measurements in RECORD_MEASURES
RECORD_FIELDS = ("key", "train_key", "scene", "method", "series", "role", "settings", "seed", "status", "error", "command",
                 "git_commit", "date", "steps", "rays_per_batch")
RECORD_MEASURES = ("psnr", "ssim", "bytes", "train_seconds", "decode_seconds", "rays_per_second", "peak_rss_mb", "epochs",
                   "test_views")


class PointFailed(RuntimeError):
    """A step of a point failed; the message names the step and the log to read."""


def _env() -> Dict[str, str]:
    """The environment of the worker processes: this one's (PYTHONPATH included), one thread per process unless set,
    and no pool of torch-inductor compile processes (nerfstudio's ``torch.compile`` decorators start one per process
    otherwise)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    return env


def _run_step(step: str, cmd: List[str], log: Path, report: Path) -> Dict[str, Any]:
    """Run one worker step (a fresh process) with its output in ``log``; return its JSON report.

    Raises:
        PointFailed: non-zero exit (the message ends with the last line of the log).
    """
    report.unlink(missing_ok=True)
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=os.getcwd()).returncode
    if rc != 0 or not report.is_file():
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else "(no output)"
        raise PointFailed(f"{step} failed (exit {rc}; log {log}): {last}")
    return json.loads(report.read_text())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (several tasks needing one training: the first trains, the others wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _train(p: Dict[str, Any], workdir: Path) -> Dict[str, Any]:
    """Train the point's model once (cached in ``WORKDIR/train/<train key>``); return the train report + command."""
    tdir = workdir / "train" / p["train_key"]
    report = tdir / "train.json"
    flags = [p["method"], *ns_train_flags(p["scene"], workdir / "train", p["scale"]), "--experiment-name", p["train_key"],
             "--machine.seed", str(p["seed"]), *p["train_flags"], *p.get("dataparser", [])]
    command = "ns-train " + shlex.join(flags)
    with _locked(workdir / "train" / f"{p['train_key']}.lock"):
        if report.is_file():
            info = json.loads(report.read_text())
            if Path(info.get("config", "")).is_file():
                return {**info, "command": command, "train_reused": True}
        tdir.mkdir(parents=True, exist_ok=True)
        info = _run_step("training", [sys.executable, "-m", "nscodec.rd.worker", "train", "--report", str(report), "--", *flags],
                         tdir / "train.log", report)
    return {**info, "command": command, "train_reused": False}


def _every(p: Dict[str, Any]) -> tuple:
    """``(every, limit)`` of the test views: all, or ``test_views`` evenly spaced over the split."""
    if p["test_views"] == "all":
        return 1, None
    n = int(p["test_views"])
    total = scene_views(Path(p["scene"]), "test")
    return (max(1, total // n) if total else 1), n


def run_point(p: Dict[str, Any], workdir: str) -> Dict[str, Any]:
    """Run one point (a :meth:`Point.to_dict`) in ``workdir``: train (or reuse its training), export, decode in a fresh
    process and evaluate. Never raises.

    Returns:
        Its record: the point's identity (``key``, ``scene``, ``method``, ``series``, ``role``, ``settings``, ``seed``),
        ``status`` (``"ok"`` / ``"failed"``), ``error`` (None or the message), ``command`` (the ``ns-train`` command),
        ``git_commit``, and when ok: ``psnr`` (dB), ``ssim``, ``bytes`` (``os.path.getsize`` of the ``.nsc``),
        ``train_seconds`` (training loop, s), ``decode_seconds`` (s), ``rays_per_second`` (training), ``peak_rss_mb``
        (training process, MiB), ``eval_peak_rss_mb``, ``steps``, ``rays_per_batch``, ``epochs``, ``test_views``,
        ``resolution``, ``nsc`` (path).
    """
    work = Path(workdir)
    pdir = work / "points" / p["key"]
    rec: Dict[str, Any] = _failed_stub(p)  # the point's identity; measured fields are added below
    t_start = time.perf_counter()
    try:
        pdir.mkdir(parents=True, exist_ok=True)
        tr = _train(p, work)
        rec.update(command=tr["command"], steps=tr["steps"], rays_per_batch=tr["rays_per_batch"], train_views=tr["train_views"],
                   epochs=tr["epochs"], train_seconds=tr["train_seconds"], rays_per_second=tr["rays_per_second"],
                   peak_rss_mb=tr["peak_rss_mb"], train_reused=tr["train_reused"], threads=tr.get("threads"))
        nsc = pdir / "scene.nsc"
        ex_cmd = [sys.executable, "-m", "nscodec.rd.worker", "export", "--report", str(pdir / "export.json"),
                  "--config", tr["config"], "--output", str(nsc)]
        for k, v in p["export_settings"].items():
            ex_cmd += ["--set", f"{k}={v}"]
        _run_step("export", ex_cmd, pdir / "export.log", pdir / "export.json")
        every, limit = _every(p)
        ev_cmd = [sys.executable, "-m", "nscodec.rd.worker", "eval", "--report", str(pdir / "eval.json"), "--file", str(nsc),
                  "--data", p["scene"], "--scale", str(p["scale"]), "--every", str(every)]
        if limit:
            ev_cmd += ["--limit", str(limit)]
        ev = _run_step("decode + evaluation", ev_cmd, pdir / "eval.log", pdir / "eval.json")
        rec.update(psnr=ev["psnr"], ssim=ev["ssim"], bytes=os.path.getsize(nsc), decode_seconds=ev["decode_seconds"],
                   test_views=ev["num_views"], resolution=f"{ev['width']}x{ev['height']}",
                   render_seconds_per_view=ev["render_seconds"] / max(1, ev["num_views"]),
                   eval_peak_rss_mb=ev.get("eval_peak_rss_mb"), nsc=str(nsc),
                   export_command="python -m nscodec.rd.worker " + shlex.join(ex_cmd[3:]),
                   eval_command="python -m nscodec.rd.worker " + shlex.join(ev_cmd[3:]))
        if "lpips" in ev:
            rec["lpips"] = ev["lpips"]
        rec["status"] = "ok"
    except Exception as err:  # a failed point is recorded, the sweep goes on
        rec["error"] = f"{type(err).__name__}: {err}" if not isinstance(err, PointFailed) else str(err)
        if not isinstance(err, PointFailed):
            rec["traceback"] = traceback.format_exc(limit=5)
    rec["point_seconds"] = time.perf_counter() - t_start
    try:
        pdir.mkdir(parents=True, exist_ok=True)
        (pdir / "record.json").write_text(json.dumps(rec, indent=2) + "\n")
    except OSError:
        pass
    return rec


def _finished(work: Path, key: str) -> Optional[Dict[str, Any]]:
    f = work / "points" / key / "record.json"
    if not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
    except json.JSONDecodeError:
        return None
    return rec if rec.get("status") == "ok" else None


def _local(todo: List[Dict[str, Any]], work: Path, runner: Callable, done: Callable[[Dict[str, Any]], None], bar: Any) -> None:
    for p in todo:
        bar.set_postfix_str(p["key"][:40])
        done(runner(p, str(work)))


def _ray(todo: List[Dict[str, Any]], work: Path, runner: Callable, done: Callable[[Dict[str, Any]], None], bar: Any,
         address: Optional[str]) -> None:
    """One Ray task per point (``num_gpus=1`` when the cluster has GPUs, else one CPU); records gathered here.
    The workers must see the same paths as this process (scenes, work directory): a shared filesystem."""
    try:
        import ray
    except ImportError:
        from nscodec.rd.spec import SpecError

        raise SpecError("--backend ray needs Ray: pip install 'nscodec[cluster]'") from None
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS") if k in os.environ}
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    task = ray.remote(runner).options(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=0)
    pending = {task.remote(p, str(work)): p for p in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            p = pending.pop(ref)
            try:
                rec = ray.get(ref)
            except Exception as err:  # the task itself died (worker lost, ...): a failed point
                rec = {**_failed_stub(p), "error": f"ray task failed: {type(err).__name__}: {err}"}
            done(rec)


def _failed_stub(p: Dict[str, Any]) -> Dict[str, Any]:
    """A point's record before anything is measured: its identity, ``status: "failed"`` and no error yet."""
    return {"key": p["key"], "train_key": p["train_key"], "scene": p.get("scene_name") or Path(p["scene"]).name,
            "data": p["scene"], "dataparser": list(p.get("dataparser", [])), "method": p["method"], "series": p["series"],
            "role": p["role"], "settings": {**p["settings"], **p["export_settings"]}, "seed": p["seed"],
            "baseline_key": p.get("baseline_key"), "scale": p["scale"], "status": "failed", "error": None, "command": "",
            "git_commit": git_commit(), "date": utc_now(), "steps": None, "rays_per_batch": None}


def run_sweep(sweep: Sweep, results: Path, name: str, command: str, backend: str = "local", address: Optional[str] = None,
              progress: bool = True, runner: Callable[[Dict[str, Any], str], Dict[str, Any]] = run_point,
              doc: Optional[Path] = None, doc_section: Optional[str] = None) -> List[Dict[str, Any]]:
    """Run every point of ``sweep`` not finished yet, then write ``results/<name>.json`` (the records, in the
    ``bench/results`` schema), ``<name>.png`` (the RD plot) and ``<name>.md`` (the table).

    The JSON is rewritten after every point, so an interrupted sweep keeps what it measured. Finished points
    (``ok`` in their ``record.json``) are skipped; failed ones are retried.

    Args:
        backend: ``"local"`` (this machine, one point at a time) or ``"ray"`` (one Ray task per point, on the
            cluster at ``address``: ``"auto"``, ``"ray://host:10001"``, or None to start/attach a local Ray).
        runner: the function running one point (:func:`run_point`; tests substitute it).
        doc / doc_section: also replace the ``<!-- bench:doc_section -->`` block of the Markdown file ``doc``.

    Returns:
        The records of all the sweep's points, in sweep order.

    Raises:
        SpecError: unknown backend, or ``ray`` without Ray installed.
    """
    from tqdm import tqdm

    from nscodec.rd.spec import SpecError

    if backend not in ("local", "ray"):
        raise SpecError(f"unknown backend {backend!r} (local, ray)")
    from nscodec.rd.results import require_clean

    require_clean()  # before anything runs: results come from a commit (or are marked dirty, --allow-dirty)
    work = Path(sweep.workdir).resolve()
    points = [p.to_dict() for p in sweep.points]
    records: Dict[str, Dict[str, Any]] = {}
    todo = []
    for p in points:
        rec = _finished(work, p["key"])
        if rec is not None:
            records[p["key"]] = {**rec, "resumed": True}
        else:
            todo.append(p)
    results = Path(results)

    def save() -> None:
        rows = [records[p["key"]] for p in points if p["key"] in records]
        write_results(results / f"{name}.json", name, rows, command, extra={"workdir": str(work), "backend": backend,
                                                                             "points": len(points)})

    work.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"nscodec rd ({backend})", unit="point",
               disable=not progress, dynamic_ncols=True)

    def done(rec: Dict[str, Any]) -> None:
        rec.setdefault("resumed", False)
        records[rec["key"]] = rec
        bar.update(1)
        if rec.get("status") != "ok":
            bar.write(f"[failed] {rec['key']}: {rec.get('error')}")
        save()

    try:
        if backend == "local":
            _local(todo, work, runner, done, bar)
        else:
            _ray(todo, work, runner, done, bar, address)
    finally:
        bar.close()
    rows = [records[p["key"]] for p in points]
    save()
    write_outputs(rows, results, name, command, doc=doc, doc_section=doc_section)
    return rows


def _setting_text(r: Dict[str, Any]) -> str:
    s = {k: v for k, v in r.get("settings", {}).items()
         if k not in ("max-num-iterations", "upsampling-iters", "step-ratio") and not k.startswith("optimizers.")}
    return ", ".join(f"{k}={v}" for k, v in s.items()) or "preset"


def markdown_table(rows: Sequence[Dict[str, Any]], command: str = "", commit: str = "") -> str:
    """The sweep's Markdown table: one line per point (failed ones with their error), PSNR change and size ratio
    against the point's own baseline where the sweep has it."""
    by_key = {r["key"]: r for r in rows}
    trainings: Dict[str, int] = {}
    for r in rows:
        trainings[r.get("train_key", "")] = trainings.get(r.get("train_key", ""), 0) + 1
    lines = []
    if command:
        lines += [f"Command: `{command}`" + (f" (git {commit})" if commit else ""), ""]
    lines += ["| series | setting | scene | seed | test PSNR (dB) | SSIM | .nsc bytes | vs base: bytes / ΔPSNR | test views | "
              "train s | rays/s | epochs | decode s | peak RSS MiB | status |",
              "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("status") != "ok":
            err = str(r.get("error", "")).replace("|", "\\|")[:160]
            lines.append(f"| {r['series']} | {_setting_text(r)} | {r['scene']} | {r['seed']} | | | | | | | | | | | failed: {err} |")
            continue
        base = by_key.get(r.get("baseline_key") or "")
        vs = (f"1/{base['bytes'] / r['bytes']:.1f} / {r['psnr'] - base['psnr']:+.2f} dB"
              if base and base.get("status") == "ok" and base is not r else "")
        shared = " (shared)" if trainings.get(r.get("train_key", ""), 0) > 1 else ""
        lines.append(f"| {r['series']} | {_setting_text(r)} | {r['scene']} | {r['seed']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                     f"{r['bytes']:,} | {vs} | {r['test_views']} | {r['train_seconds']:.0f}{shared} | {r['rays_per_second']:,.0f} | "
                     f"{r['epochs']:.2f} | {r['decode_seconds']:.2f} | {r['peak_rss_mb']:,.0f} | ok |")
    return "\n".join(lines) + "\n"


def write_outputs(rows: Sequence[Dict[str, Any]], results: Path, name: str, command: str, doc: Optional[Path] = None,
                  doc_section: Optional[str] = None, commit: Optional[str] = None, total: Optional[int] = None) -> Dict[str, Path]:
    """Write ``<name>.md`` (table) and one RD plot per scene, ``<name>.png`` for one scene or ``<name>-<scene>.png``
    (skipped with a message when matplotlib is missing)
    under ``results``; with ``doc``, also the ``doc_section`` (default ``name``) block of that Markdown file: a heading,
    the table and the plot. ``commit``: the git commit to print (default: the current checkout's); ``total``: the sweep's number of points, when
    ``rows`` holds only those measured so far.

    Returns:
        ``{"table": path, "plot": path, "plot:SCENE": path, ...}``: the table, the first plot and each scene's plot
        (no plot keys when matplotlib is missing).
    """
    from nscodec.rd.plot import plot_series, series_from_rows

    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    commit = git_commit() if commit is None else commit
    table = markdown_table(rows, command, commit)
    ok = [r for r in rows if r.get("status") == "ok"]
    scenes = sorted({r["scene"] for r in rows})
    res = sorted({r["resolution"] for r in ok})
    views = sorted({str(r["test_views"]) for r in ok})
    heading = (f"`nscodec rd` sweep {name}: {', '.join(scenes)}" + (f", {'/'.join(res)}" if res else "")
               + (f", {'/'.join(views)} test views" if views else "") + f"; {len(ok)}/{total or len(rows)} points ok")
    from nscodec.rd.report import bd_table

    table += "\nBjøntegaard deltas against the post-hoc curve of the TensoRF base (PCHIP fit, `nscodec.rd.bd`):\n\n" + bd_table(rows)
    out = {"table": results / f"{name}.md"}
    out["table"].write_text(f"# {heading}\n\n" + table)
    plots: Dict[str, Path] = {}
    try:  # one RD plot per scene (NAME.png for a one-scene sweep, NAME-SCENE.png otherwise)
        for scene in sorted({r["scene"] for r in ok}):
            path = results / (f"{name}.png" if len(scenes) == 1 else f"{name}-{scene}.png")
            plots[scene] = plot_series(series_from_rows(r for r in ok if r["scene"] == scene), path, f"{name}: {scene}")
    except ImportError:
        print("nscodec rd: matplotlib not installed, no plot (pip install 'nscodec[bench]')", file=sys.stderr)
    if plots:
        out["plot"] = next(iter(plots.values()))
        out.update({f"plot:{scene}": path for scene, path in plots.items()})
    if doc is not None:
        from nscodec.rd.results import update_markdown_section

        plot = ""
        for scene, path in plots.items():
            try:
                plot += f"\n![{name}: {scene}]({os.path.relpath(path, Path(doc).resolve().parent)})\n"
            except ValueError:
                pass
        update_markdown_section(Path(doc), doc_section or name, f"## {heading}\n\n" + table + plot)
    return out
