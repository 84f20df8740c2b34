#!/usr/bin/env python3
"""Side-by-side benchmark: this project's caio against caio 0.12.10 from PyPI.

Every measurement runs in a fresh subprocess. For each configuration (workload x
concurrency x event loop x backend) the two sides run back to back, and which side
goes first alternates from one repeat to the next, so slow drifts of a noisy machine
hit both sides alike. Repeats are interleaved (all configurations once, then all
again), and the table reports medians and [min-max] over the repeats; ratios are
ours/theirs of the two runs of the same repeat.

Upstream caio is loaded by putting a ``pip install --target`` folder first on
``PYTHONPATH`` of its subprocesses (same import name ``caio``). The folder is created
on first use (``--upstream-dir``, default ``benchmarks/.upstream/caio-<version>``).

Examples::

    python benchmarks/compare.py                      # full run (a few minutes)
    python benchmarks/compare.py --repeat 5 --json out.json --plot out.png
    python benchmarks/compare.py --quick --no-upstream # smoke run, this project only
    python benchmarks/compare.py --backends thread --workloads rand4k --concurrency 1,64

Reference rows (run with this project's interpreter, no caio involved):
``run_in_executor(None, os.pread)``, aiofiles (if installed) and the bare asyncio
"floor" (create a future, resolve it through ``call_soon``, await it).

trio (``--loops trio``, and by default when trio is installed): this project's
``caio.trio_adapter`` contexts (caio 0.12.10 has none, so no ratios there) against trio's
and anyio's thread-based file APIs under ``trio.run``: ``trio.open_file`` (what
``trio.Path.open`` and ``trio.wrap_file`` give: a worker-thread call per seek and read),
``anyio.open_file`` (likewise) and ``trio.to_thread.run_sync(os.pread)``, plus trio's
floor (``trio.lowlevel.checkpoint()``). Without ``caio.trio_adapter`` the trio rows are
the reference rows only, with a note.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import benchlib
import harness
from harness import (
    UPSTREAM_VERSION,
    Side,
    field_values,
    fmt_num,
    fmt_stat,
    log,
    paired_ratios,
    parse_int_list,
    parse_str_list,
    render_table,
    stats,
)

SCRIPT = Path(__file__).resolve()
DEFAULT_CONCURRENCY = (1, 16, 64, 256)
OTHER_CONCURRENCY = 16
NATIVE_MATCHED = ("uring", "linux", "thread")
REF_LABELS = {
    "executor": "run_in_executor(os.pread)",
    "aiofiles": "aiofiles",
    "floor": "asyncio floor (future+call_soon)",
    "trio-file": "trio.open_file (wrap_file, threads)",
    "anyio-file": "anyio.open_file (threads)",
}
TRIO_REF_LABELS = {
    "executor": "trio.to_thread.run_sync(os.pread)",
    "floor": "trio floor (checkpoint)",
}
# The thread-based file APIs the trio rows of ours are compared with (key figures).
TRIO_THREAD_REFS = ("trio-file", "anyio-file", "executor")
# Targets the project tracks (ours/theirs ops/s, thread backend, 4 KiB random reads).
KEY_TARGETS = {1: 3.0, 64: 5.0}


# =============================================================================
# worker side (runs in the fresh subprocess)
# =============================================================================


def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    files = spec["files"]
    lib = benchlib.async_lib(spec["loop"])
    if spec["kind"] == "bigread":
        warm = benchlib.warm_file(files["big"])
        result = harness.run_on_loop(spec["loop"], partial(
            benchlib.big_read, spec["runner"], files["big"], spec["big_size"], lib=lib))
    elif spec["kind"] == "timed":
        workload = benchlib.WORKLOADS[spec["workload"]]
        warm = benchlib.before_run(workload, files)
        result = harness.run_on_loop(spec["loop"], partial(_timed, spec, workload, files, lib))
        benchlib.after_run(workload, files)
    else:
        raise ValueError(f"unknown worker kind {spec['kind']!r}")
    result["warm"] = warm
    return result


async def _timed(spec: dict[str, Any], workload: benchlib.Workload,
                 files: dict[str, str], lib: benchlib.AsyncLib) -> dict[str, Any]:
    concurrency = spec["concurrency"]
    runner = benchlib.Runner(spec["runner"], workload, files, lib)
    try:
        offsets = await runner.start(concurrency)
        if spec["warmup"] > 0:
            await benchlib.run_timed(runner, concurrency, spec["warmup"], offsets)
        return await benchlib.run_timed(runner, concurrency, spec["seconds"], offsets)
    finally:
        await runner.close()


# =============================================================================
# driver side
# =============================================================================


@dataclass
class Config:
    kind: str  # "timed" / "bigread"
    workload: str
    concurrency: int
    loop: str
    label: str  # backend name ("thread", "default", ...) or "ref:<name>"
    runners: dict[str, str]  # side name -> runner spec ("caio:thread", "executor", ...)
    results: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def is_ref(self) -> bool:
        return self.label.startswith("ref:")

    def describe(self) -> str:
        if self.kind == "bigread":
            return f"bigread {self.loop} {self.label}"
        return f"{self.workload} c={self.concurrency} {self.loop} {self.label}"


def build_configs(args: argparse.Namespace, ours: Side, theirs: Side | None,
                  loops: list[str]) -> list[Config]:
    ours_backends = set(ours.info["backends"])
    if args.backends:
        wanted = parse_str_list(args.backends)
    else:
        wanted = [b for b in NATIVE_MATCHED if b in ours_backends] + ["default"]
    labels: list[str] = []
    for b in wanted:
        if b == "default":
            labels.append(b)
            continue
        if b not in ours_backends:
            log(f"note: backend {b!r} is not available in ours; skipped")
            continue
        if theirs is not None and b not in theirs.info["backends"]:
            log(f"note: backend {b!r} is not available in caio {UPSTREAM_VERSION}; skipped")
            continue
        labels.append(b)

    # When "default" resolves to the same backend on both sides and that backend is measured
    # anyway, do not measure it twice: its row is marked "(= default)" instead.
    args.default_alias = None
    if "default" in labels:
        same = ours.info["default"] if theirs is None or \
            theirs.info["default"] == ours.info["default"] else None
        if same is not None and same in labels:
            labels.remove("default")
            args.default_alias = same

    trio_labels = trio_caio_labels(labels, ours, loops)

    workloads = parse_str_list(args.workloads) if args.workloads else list(benchlib.WORKLOADS)
    if not ours.info.get("aligned_buffer"):
        direct = [w for w in workloads if w in benchlib.WORKLOADS and
                  benchlib.WORKLOADS[w].direct]
        if direct:
            log(f"note: caio.aligned_buffer is missing in ours: {', '.join(direct)} skipped "
                f"({harness.ALIGNED_STANDIN_ENV}=1 measures an anonymous mmap instead)")
            workloads = [w for w in workloads if w not in direct]
    workloads_b = [w for w in workloads if w in benchlib.WORKLOADS]
    for wname in workloads:
        if wname not in benchlib.WORKLOADS and wname != "bigread":
            raise SystemExit(f"unknown workload {wname!r}; have {', '.join(benchlib.WORKLOADS)}, "
                             "bigread")

    all_sides = ["ours"] + (["theirs"] if theirs is not None else [])
    configs: list[Config] = []
    for loop in loops:
        # caio 0.12.10 has no trio adapter: trio rows are ours (and the references) only.
        loop_labels, sides = (trio_labels, ["ours"]) if loop == "trio" else (labels, all_sides)
        refs = [] if args.no_refs else reference_runners(loop, ours)
        for wname in workloads_b:
            w = benchlib.WORKLOADS[wname]
            concs = args.concurrency_list if wname in ("rand4k", "rand4k_into") else \
                [OTHER_CONCURRENCY]
            # caio 0.12.10 has no read_into: those rows are ours only
            w_sides = ["ours"] if w.op == "read_into" else sides
            for c in concs:
                for label in loop_labels:
                    runners = {s: f"caio:{label}" for s in w_sides}
                    configs.append(Config("timed", wname, c, loop, label, runners))
                for ref in refs:
                    if ref == "floor" and wname != "rand4k":
                        continue
                    if ref in benchlib.FILE_APIS and w.op not in ("read", "write"):
                        continue
                    configs.append(Config("timed", wname, c, loop, f"ref:{ref}", {"ref": ref}))
        if "bigread" in workloads and args.big_read_mib > 0:
            for label in loop_labels:
                runners = {s: f"caio:{label}" for s in sides}
                configs.append(Config("bigread", "bigread", 1, loop, label, runners))
            for ref in refs:
                if ref == "executor" or ref in benchlib.FILE_APIS:
                    configs.append(Config("bigread", "bigread", 1, loop, f"ref:{ref}",
                                          {"ref": ref}))
    return configs


def trio_caio_labels(labels: list[str], ours: Side, loops: list[str]) -> list[str]:
    """The backend labels of the trio rows: those ``caio.trio_adapter`` has (none, with
    a note, when it is not importable)."""
    if "trio" not in loops:
        return []
    if ours.info.get("trio_error"):
        log(f"note: {ours.info['trio_error']}; the trio rows are the reference rows only")
        return []
    have = set(ours.info.get("trio_backends", ()))
    for label in labels:
        if label != "default" and label not in have:
            log(f"note: backend {label!r} is not in caio.trio_adapter; no trio row")
    return [label for label in labels if label == "default" or label in have]


def reference_runners(loop: str, ours: Side) -> list[str]:
    """The reference rows of a loop, those whose library is installed."""
    if loop == "trio":
        refs = ["executor", "trio-file"]
        if ours.info.get("anyio"):
            refs.append("anyio-file")
    else:
        refs = ["executor"] + (["aiofiles"] if ours.info.get("aiofiles") else [])
    return refs + ["floor"]


def run_all(args: argparse.Namespace, configs: list[Config], sides: dict[str, Side],
            files: dict[str, str]) -> None:
    """Per configuration its sides back to back ("ref" rows run on our side)."""
    for cfg in configs:
        cfg.results = {name: [None] * args.repeat for name in cfg.runners}

    def measure(rep: int, member: tuple[Config, str]) -> str:
        cfg, side_name = member
        spec: dict[str, Any] = {
            "kind": cfg.kind,
            "runner": cfg.runners[side_name],
            "workload": cfg.workload,
            "concurrency": cfg.concurrency,
            "loop": cfg.loop,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "files": files,
            "big_size": args.big_read_mib * harness.MiB,
        }
        side = sides["ours" if side_name == "ref" else side_name]
        try:
            result = side.run(spec, timeout=60 + 20 * args.seconds)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            harness.note_failure(cfg.errors, f"{side_name}: {exc}")
            return f"ERROR {exc}"
        cfg.results[side_name][rep] = result
        return (f"{result['ops_per_s']:,.0f} ops/s" if cfg.kind == "timed"
                else f"stall {result['max_stall_ms']:.1f} ms (loop CPU {result['stall_cpu_ms']:.2f} "
                     f"ms), free {result['free_ms']:.1f} ms")

    groups = [[(cfg, name) for name in cfg.runners] for cfg in configs]
    harness.run_interleaved(args.repeat, groups, measure,
                            lambda m: f"{m[0].describe()} {m[1]}", args.quiet)


# ----------------------------------------------------------------- aggregation


TIMED_KEYS = ("ops_per_s", "p50_us", "p99_us", "cpu_us_per_op", "max_stall_ms",
              "workers_active")
BIG_KEYS = ("elapsed_s", "cpu_s", "max_stall_ms", "stall_cpu_ms", "max_loop_cpu_ms",
            "free_ms", "peak_rss_mib", "peak_delta_mib", "idle_tick_ms")


def aggregate(configs: list[Config], sides: dict[str, Side],
              default_alias: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for cfg in configs:
        keys = TIMED_KEYS if cfg.kind == "timed" else BIG_KEYS
        row: dict[str, Any] = {
            "kind": cfg.kind, "workload": cfg.workload, "concurrency": cfg.concurrency,
            "loop": cfg.loop, "label": cfg.label, "errors": cfg.errors, "is_ref": cfg.is_ref,
            "default_alias": default_alias is not None and cfg.label == default_alias,
        }
        for side_name, results in cfg.results.items():
            row[side_name] = {k: stats(field_values(results, k)) for k in keys}
            warm = [r["warm"] for r in results if r is not None and "warm" in r]
            row[side_name]["warm"] = warm
            if side_name in ("ours", "theirs") and cfg.label == "default":
                row[side_name]["resolved"] = sides[side_name].info.get("default")
        if "ours" in cfg.results and "theirs" in cfg.results:
            row["ratio"] = {k: stats(paired_ratios(cfg.results["ours"], cfg.results["theirs"], k))
                            for k in keys}
        if cfg.loop == "trio" and cfg.kind == "timed" and not cfg.is_ref:
            row["vs_refs"] = trio_ref_ratios(cfg, configs)
        rows.append(row)
    return rows


def trio_ref_ratios(cfg: Config, configs: list[Config]) -> dict[str, dict[str, float] | None]:
    """ops/s of a trio row of ours over each thread-based reference row of the same
    workload and concurrency, repeat by repeat (they run in the same round)."""
    refs = {other.label[4:]: other for other in configs
            if other.is_ref and other.kind == cfg.kind and
            (other.loop, other.workload, other.concurrency) ==
            (cfg.loop, cfg.workload, cfg.concurrency)}
    return {name: stats(paired_ratios(cfg.results["ours"], refs[name].results["ref"],
                                      "ops_per_s"))
            for name in TRIO_THREAD_REFS if name in refs}


# --------------------------------------------------------------------- output


def med(side: dict[str, Any] | None, key: str) -> float | None:
    if not side or not side.get(key):
        return None
    return side[key]["median"]


def pair_text(row: dict[str, Any], key: str, integer: bool = False) -> str:
    o = med(row.get("ours") or row.get("ref"), key)
    t = med(row.get("theirs"), key)
    fmt = (lambda v: "-" if v is None else f"{v:.0f}") if integer else fmt_num
    if "theirs" not in row:
        return fmt(o)
    return f"{fmt(o)} / {fmt(t)}"


def big_cell(row: dict[str, Any], key: str, scale: float) -> str:
    """A big-read cell: ``ours / theirs`` medians, or ours as median [min-max]."""
    def scaled(s: dict[str, float] | None) -> dict[str, float] | None:
        if not s:
            return None
        return {k: (v * scale if k in ("median", "min", "max") else v) for k, v in s.items()}

    o = scaled((row.get("ours") or row.get("ref") or {}).get(key))
    if "theirs" in row:
        t = scaled(row["theirs"].get(key))
        return f"{fmt_num(o and o['median'])} / {fmt_num(t and t['median'])}"
    return fmt_stat(o)


def fairness_caveat(row: dict[str, Any], seconds: float) -> str:
    """Say so when our side starved other tasks (the ticker, or its own workers)."""
    ours = row.get("ours")
    if not ours:
        return ""
    parts = []
    active = med(ours, "workers_active")
    if active is not None and active < row["concurrency"]:
        parts.append(f"{active:.0f} of {row['concurrency']} workers active")
    stall = med(ours, "max_stall_ms")
    if stall is not None and stall >= 0.5 * seconds * 1e3:
        parts.append(f"1 ms ticker starved for {stall:.0f} ms of a {seconds * 1e3:.0f} ms run")
    return ", ".join(parts)


def ref_label(name: str, loop: str, workload: str) -> str:
    """What a reference row runs, e.g. ``run_in_executor(os.pwrite)``."""
    text = (TRIO_REF_LABELS if loop == "trio" else {}).get(name) or REF_LABELS.get(name, name)
    if name == "executor":
        op = benchlib.WORKLOADS[workload].op if workload in benchlib.WORKLOADS else "read"
        fn = {"read": "pread", "read_into": "preadv", "write": "pwrite", "fsync": "fsync",
              "fdsync": "fdatasync"}[op]
        text = text.replace("os.pread", f"os.{fn}")
    return text


def row_label(row: dict[str, Any]) -> str:
    label = row["label"]
    if label.startswith("ref:"):
        return "ref " + ref_label(label[4:], row["loop"], row["workload"])
    if row.get("default_alias"):
        return f"{label} (= default)"
    if label == "default":
        o = (row.get("ours") or {}).get("resolved")
        t = (row.get("theirs") or {}).get("resolved")
        return f"default ({o} vs {t})" if t else f"default ({o})"
    return label


def print_report(rows: list[dict[str, Any]], meta: dict[str, Any], has_theirs: bool) -> str:
    out: list[str] = []
    theirs_title = f"caio {UPSTREAM_VERSION}"
    out.append("")
    out.append(f"caio benchmark: ours = {meta['ours']['version']} ({meta['ours']['file']})"
               + (f" vs theirs = {theirs_title} ({meta['theirs']['file']})" if has_theirs
                  else " (no upstream comparison)"))
    out.append(f"machine: {meta['cpus']} CPUs, Linux {meta['kernel']}, Python {meta['python']}; "
               f"data on {meta['fstype']} ({meta['data_dir']})")
    out.append(f"runs: {meta['repeat']} x {meta['seconds']} s per configuration (+{meta['warmup']}"
               f" s warm-up), fresh subprocess each, sides alternating; values are medians "
               f"[min-max] over repeats; ratio = ours/theirs of paired runs")
    out.append(f"backends: ours {', '.join(meta['ours']['backends'])} (default "
               f"{meta['ours']['default']})" + (f"; theirs {', '.join(meta['theirs']['backends'])}"
                                                 f" (default {meta['theirs']['default']})"
                                                 if has_theirs else ""))
    if "trio" in meta["loops"]:
        trio_error = meta["ours"].get("trio_error")
        out.append("trio rows: " + (
            f"reference rows only: {trio_error}" if trio_error else
            f"ours through caio.trio_adapter ({', '.join(meta['ours']['trio_backends'])}); "
            f"caio {UPSTREAM_VERSION} has no trio adapter, so no ratios to it"))

    timed = [r for r in rows if r["kind"] == "timed"]
    if timed:
        headers = ["loop", "workload", "c", "backend", "ours ops/s"]
        align = "llrlr"
        if has_theirs:
            headers += [f"{theirs_title} ops/s", "ours/theirs"]
            align += "rr"
            headers += ["p50 us o/t", "p99 us o/t", "CPU us/op o/t", "CPU o/t", "stall ms o/t",
                        "active o/t"]
            align += "rrrrrr"
        else:
            headers += ["p50 us", "p99 us", "CPU us/op", "stall ms", "active"]
            align += "rrrrr"
        body: list[list[str]] = []
        prev = None
        for r in timed:
            key = (r["loop"], r["workload"], r["concurrency"])
            if prev is not None and key != prev:
                body.append([])
            prev = key
            side = r.get("ours") or r.get("ref") or {}
            cells = [r["loop"], r["workload"], str(r["concurrency"]), row_label(r),
                     fmt_stat(side.get("ops_per_s"))]
            if has_theirs:
                if "theirs" in r:
                    cells += [fmt_stat(r["theirs"].get("ops_per_s")),
                              fmt_stat(r["ratio"].get("ops_per_s"), ratio=True)]
                else:
                    cells += ["", ""]
            cells += [pair_text(r, "p50_us"), pair_text(r, "p99_us"),
                      pair_text(r, "cpu_us_per_op")]
            if has_theirs:  # CPU per op of ours over theirs, run by run (lower: ours cheaper)
                cells.append(fmt_stat((r.get("ratio") or {}).get("cpu_us_per_op"), ratio=True)
                             if "theirs" in r else "")
            cells += [pair_text(r, "max_stall_ms"), pair_text(r, "workers_active", integer=True)]
            if r["errors"]:
                failed = not side.get("ops_per_s") or ("theirs" in r and
                                                       not r["theirs"].get("ops_per_s"))
                cells[4] = "ERROR" if failed else cells[4] + " (!)"
            body.append(cells)
        out.append("")
        out.append("== throughput (ops/s, higher is better); latency and CPU: lower is better ==")
        out.append("(stall = longest gap of a 1 ms ticker task during the run; active = workers "
                   "that completed at least one operation, of c)")
        out += render_table(headers, body, align)

    big = [r for r in rows if r["kind"] == "bigread"]
    if big:
        mib = meta["big_read_mib"]
        headers = ["loop", "backend", "read ms", "CPU ms", "max loop stall ms", "loop CPU in it",
                   "max loop CPU/tick", "free ms", "peak RSS MiB", "RSS growth MiB"]
        align = "llrrrrrrrr"
        body = []
        for r in big:
            cells = [r["loop"], row_label(r)]
            for bkey in ("elapsed_s", "cpu_s", "max_stall_ms", "stall_cpu_ms", "max_loop_cpu_ms",
                         "free_ms", "peak_rss_mib", "peak_delta_mib"):
                cells.append(big_cell(r, bkey, 1e3 if bkey in ("elapsed_s", "cpu_s") else 1.0))
            if r["errors"]:
                cells[2] += " (!)"
            body.append(cells)
        out.append("")
        out.append(f"== one {mib} MiB read (page cache) while a 1 ms ticker runs; "
                   + ("ours / theirs, medians" if has_theirs else "median [min-max]") + " ==")
        out.append("(stall: the ticker's longest gap from the call until the result is in hand; "
                   "loop CPU in it: what the loop thread itself ran during that gap, the rest "
                   "it waited for a CPU; max loop CPU/tick: the most it ran in any one gap; "
                   "free: dropping the result afterwards, outside the stall)")
        idle = [x for x in (med(r.get("ours") or r.get("ref"), "idle_tick_ms") for r in big)
                if x is not None]
        if idle:
            out.append(f"(an idle tick takes ~{statistics.median(idle):.2f} ms here; "
                       "a stall equal to the read time means the read ran on the loop thread)")
        out += render_table(headers, body, align)

    warm_all = []
    for r in rows:
        for s in ("ours", "theirs", "ref"):
            if r.get(s):
                for w in r[s].get("warm", []):
                    warm_all.append(((f"{r['loop']} {r['workload']} c={r['concurrency']} "
                                     f"{row_label(r)}"), w))
    out.append("")
    out += harness.page_cache_lines(warm_all)
    errors = [r for r in rows if r["errors"]]
    for r in errors:
        for e in r["errors"]:
            out.append(f"ERROR (!) {r['loop']} {r['workload']} c={r['concurrency']} "
                       f"{row_label(r)}: {e} (failed runs are left out of the medians)")

    # Key figures.
    unfair = [(r, fairness_caveat(r, meta["seconds"])) for r in timed if not r["is_ref"]]
    harness.add_section(
        out, "event-loop fairness: ours kept the loop to itself in these runs (operations "
        "that complete without suspending):",
        [f"  {r['loop']} {r['workload']} c={r['concurrency']} {row_label(r)}: {c}"
         for r, c in unfair if c])
    key_lines = []
    if has_theirs:
        for r in timed:
            if r["label"] == "thread" and r["workload"] == "rand4k" and \
                    r["concurrency"] in KEY_TARGETS and r.get("ratio"):
                s = r["ratio"].get("ops_per_s")
                target = KEY_TARGETS[r["concurrency"]]
                verdict = harness.target_verdict(s, target)
                line = (f"  thread_aio_asyncio rand4k c={r['concurrency']:<3} "
                        f"{r['loop']:<7}: ours/theirs {fmt_stat(s, ratio=True)} "
                        f"(target >= {target:g}x: {verdict})")
                caveat = fairness_caveat(r, meta["seconds"])
                key_lines.append(line + (f"; caveat: {caveat}" if caveat else ""))
    harness.add_section(out, "key figures (4 KiB random reads in page cache, ops/s ratio):",
                        key_lines)
    trio_lines = []
    for r in timed:
        if r.get("vs_refs"):
            ratios = ", ".join(f"{fmt_stat(s, ratio=True)} {ref_label(name, 'trio', r['workload'])}"
                               for name, s in r["vs_refs"].items())
            trio_lines.append(f"  {r['workload']} c={r['concurrency']} {row_label(r)}: {ratios}")
    harness.add_section(out, "trio: ours / thread-based file APIs (ops/s ratio of the runs of "
                        "the same repeat):", trio_lines)
    harness.add_section(out, "read_into a reused buffer / read returning bytes (ours, ops/s "
                        "of the medians):", into_ratio_lines(timed))
    return harness.emit_report(out, meta["wall_s"])


INTO_PAIRS = {"rand4k_into": "rand4k", "seq1m_into": "seq1m"}


def into_ratio_lines(timed: list[dict[str, Any]]) -> list[str]:
    by_key = {(r["workload"], r["concurrency"], r["loop"], r["label"]): r for r in timed}
    lines = []
    for r in timed:
        bytes_workload = INTO_PAIRS.get(r["workload"])
        if bytes_workload is None:
            continue
        twin = by_key.get((bytes_workload, r["concurrency"], r["loop"], r["label"]))
        side = "ref" if r["is_ref"] else "ours"
        into = med(r.get(side), "ops_per_s")
        plain = med((twin or {}).get(side), "ops_per_s")
        if into is None or not plain:
            continue
        lines.append(f"  {r['loop']} {r['workload']} c={r['concurrency']} {row_label(r)}: "
                     f"{into:,.0f} vs {plain:,.0f} ops/s = {into / plain:.2f}x")
    return lines


def make_plot(rows: list[dict[str, Any]], path: str, has_theirs: bool) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot")
        return False
    rand = [r for r in rows if r["kind"] == "timed" and r["workload"] == "rand4k"]
    loops = sorted({r["loop"] for r in rand}, key=lambda x: (x != "asyncio", x))
    if not loops:
        log("no rand4k results: no plot")
        return False
    fig, axes = plt.subplots(1, len(loops), figsize=(6.5 * len(loops), 4.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, loop in zip(axes[0], loops):
        labels = []
        for r in rand:
            if r["loop"] == loop and r["label"] not in labels:
                labels.append(r["label"])
        for i, label in enumerate(labels):
            pts = sorted((r["concurrency"], r) for r in rand
                         if r["loop"] == loop and r["label"] == label)
            xs = [c for c, _ in pts]
            color = colors[i % len(colors)]
            if label.startswith("ref:"):
                ys = [med(r.get("ref"), "ops_per_s") for _, r in pts]
                style = {"ref:floor": ("black", ":"), "ref:executor": ("gray", ":"),
                         "ref:aiofiles": ("gray", "-.")}.get(label, ("gray", ":"))
                ax.plot(xs, ys, style[1], color=style[0], marker=".",
                        label=ref_label(label[4:], loop, "rand4k"))
                continue
            ys = [med(r.get("ours"), "ops_per_s") for _, r in pts]
            ax.plot(xs, ys, "-o", color=color, label=f"ours {row_label(pts[0][1])}")
            if has_theirs:
                yt = [med(r.get("theirs"), "ops_per_s") for _, r in pts]
                theirs_name = label
                if label == "default":
                    theirs_name = f"default ({(pts[0][1].get('theirs') or {}).get('resolved')})"
                ax.plot(xs, yt, "--x", color=color,
                        label=f"caio {UPSTREAM_VERSION} {theirs_name}")
        ax.set_xscale("log", base=2)
        concs = sorted({r["concurrency"] for r in rand})
        ax.set_xticks(concs)
        ax.set_xticklabels([str(c) for c in concs])
        ax.set_yscale("log")
        ax.set_xlabel("concurrency")
        ax.set_ylabel("ops/s (median)")
        ax.set_title(f"4 KiB random reads, page cache, {loop}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Compare this project's caio with caio 0.12.10 (ours/theirs ratios).")
    p.add_argument("--quick", action="store_true",
                   help="short runs for CI smoke: 1 repeat, 0.1 s per run, 32 MiB big read")
    p.add_argument("--repeat", type=int, default=None, help="repeats per configuration (3)")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per run (0.25)")
    p.add_argument("--warmup", type=float, default=None,
                   help="unmeasured seconds before each run (0.05)")
    p.add_argument("--backends", default=None,
                   help="comma list of uring,linux,thread,python,default "
                        "(default: native backends both sides have + default)")
    p.add_argument("--concurrency", default=None,
                   help="concurrency list for 4 KiB random reads (1,16,64,256)")
    p.add_argument("--workloads", default=None,
                   help=f"comma list of {','.join(benchlib.WORKLOADS)},bigread (all)")
    p.add_argument("--loops", default=None,
                   help="comma list of asyncio,uvloop,trio (default: those installed)")
    p.add_argument("--big-read-mib", type=int, default=None,
                   help="size of the single big read (256; 0 disables)")
    p.add_argument("--no-refs", action="store_true",
                   help="skip the reference rows (executor, aiofiles, floor)")
    harness.add_side_options(p, "measure this project only (no PyPI install, no ratios)")
    p.add_argument("--ours-path", default=None,
                   help="folder to put first on PYTHONPATH for our side "
                        "(default: the caio that this interpreter imports)")
    p.add_argument("--data-dir", default=None,
                   help="folder for the data files (default: a temporary folder, removed "
                        "afterwards); must be a real filesystem, not tmpfs")
    p.add_argument("--plot", default=None, help="write ops/s vs concurrency plot (PNG)")
    harness.add_output_options(p, "write all results as JSON")
    args = p.parse_args(argv)

    if args.quick:
        defaults = {"repeat": 1, "seconds": 0.1, "warmup": 0.02, "big_read_mib": 32}
    else:
        defaults = {"repeat": 3, "seconds": 0.25, "warmup": 0.05, "big_read_mib": 256}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.repeat < 1 or args.seconds <= 0:
        p.error("--repeat must be >= 1 and --seconds > 0")
    args.concurrency_list = (parse_int_list(args.concurrency) if args.concurrency
                             else list(DEFAULT_CONCURRENCY))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return harness.serve_worker(worker_main, args.worker)

    t0 = time.monotonic()
    sides = harness.prepare_sides(SCRIPT, args, [args.ours_path] if args.ours_path else [])
    ours, theirs = sides["ours"], sides.get("theirs")

    loops = parse_str_list(args.loops) if args.loops else ours.info["loops"]
    for loop in loops:
        if loop not in ours.info["loops"]:
            raise SystemExit(f"event loop {loop!r} is not available (have {ours.info['loops']})")

    with benchlib.data_directory(args.data_dir) as data:
        workloads = parse_str_list(args.workloads) if args.workloads else None
        need_big = (workloads is None or "bigread" in workloads) and args.big_read_mib > 0
        files = benchlib.prepare_data_dir(
            data.path, big_size=args.big_read_mib * harness.MiB if need_big else 0)
        if workloads is None:
            args.workloads = ",".join(list(benchlib.WORKLOADS) + ["bigread"])

        configs = build_configs(args, ours, theirs, loops)
        if not configs:
            raise SystemExit("nothing to run")
        run_all(args, configs, sides, files)

    rows = aggregate(configs, sides, args.default_alias)
    meta = {
        **harness.sides_meta(sides),
        **harness.machine_meta(),
        "fstype": data.fstype,
        "data_dir": data.description,
        "repeat": args.repeat,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "big_read_mib": args.big_read_mib,
        "loops": loops,
        "argv": sys.argv[1:] if argv is None else argv,
        "wall_s": time.monotonic() - t0,
    }
    report = print_report(rows, meta, theirs is not None)
    if args.json_out:
        raw = [{"kind": c.kind, "workload": c.workload, "concurrency": c.concurrency,
                "loop": c.loop, "label": c.label, "runners": c.runners, "results": c.results,
                "errors": c.errors} for c in configs]
        harness.write_json(args.json_out, meta, rows, raw, report)
    if args.plot and make_plot(rows, args.plot, theirs is not None):
        log(f"wrote {args.plot}")
    return 1 if any(c.errors for c in configs) else 0


if __name__ == "__main__":
    sys.exit(main())
