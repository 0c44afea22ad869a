"""Profiler reports: one JSON (schema `toolkit/schemas/report.schema.json`), Markdown, a terminal
table and PNG plots, all written atomically into the run folder.

Ratios are always taken against the FP32 PyTorch reference measured in the same run on the same
machine, never against remembered figures: the machines are shared and noisy.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from toolkit.errors import UserError
from toolkit.fileio import atomic_path, atomic_write_bytes, atomic_write_json, read_json_document

log = logging.getLogger(__name__)

REPORT_SCHEMA = "llpacknet-edge/profile-report"
REPORT_VERSION = 1
REFERENCE = "torch-fp32"
BOARD_REFERENCE = "tflite-fp32"  # the reference on a board without torch
SID_LABEL = "sid-unet-fp32"
MEASURED = ("ok", "partial")  # the other statuses, failed and skipped, carry no measurements
# What the LLPackNet paper claims against the SID U-Net (BMVC 2020 and the CVPR 2021 table), as ranges.
SID_PAPER_CLAIMS = {"fewer_parameters": [2.0, 7.0], "less_memory": [2.0, 3.0], "faster": [5.0, 20.0]}


def _significant(value: float, digits: int = 4) -> float:
    """Rounded to significant digits, not decimals: a tiny test image's GMAC/s is a small number."""
    return float(f"{value:.{digits}g}")


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def aggregate(label: str, size: tuple[int, int], results: list[dict]) -> dict:
    """One report row from the repeats of one model: pooled latency, run-to-run spread, worst peak memory."""
    target, _, precision = label.rpartition("-")
    row = {"label": label, "target": target, "precision": precision, "size": list(size)}
    ok = [r for r in results if r["status"] == "ok"]
    errors = [r["error"] for r in results if r["status"] != "ok"]
    if not ok:
        return {**row, "status": "failed", "error": errors[0] if errors else "no result", "repeats": len(results)}
    first = ok[0]
    p50s = [r["latency_ms"]["p50"] for r in ok]
    runs = sum(r["latency_ms"]["runs"] for r in ok)
    pooled_mean = sum(r["latency_ms"]["mean"] * r["latency_ms"]["runs"] for r in ok) / runs
    median_p50 = float(np.median(p50s))
    spread = 100.0 * (max(p50s) - min(p50s)) / median_p50
    jitter = max(100.0 * (r["latency_ms"]["p90"] - r["latency_ms"]["p10"]) / r["latency_ms"]["p50"] for r in ok)
    latency = {
        "runs": runs,
        "mean": pooled_mean,
        "std": float(np.sqrt(np.mean([r["latency_ms"]["std"] ** 2 + (r["latency_ms"]["mean"] - pooled_mean) ** 2 for r in ok]))),
        "min": min(r["latency_ms"]["min"] for r in ok),
        "max": max(r["latency_ms"]["max"] for r in ok),
        "p50": median_p50,
        "p90": _mean([r["latency_ms"]["p90"] for r in ok]),
        "p99": max(r["latency_ms"]["p99"] for r in ok),
        "repeat_p50s": p50s,
        "spread_pct": spread,  # between fresh processes
        "jitter_pct": jitter,  # p10..p90 inside one process
        "noise_pct": max(spread, jitter),  # what two runs of this report may differ by
    }
    stages = {k: float(np.median([r["stages_ms"][k] for r in ok])) for k in first["stages_ms"]}
    stages["inference"] = median_p50
    quality = first.get("quality") or {}
    macs = first.get("macs_per_pixel")
    row.update({
        "status": "ok" if not errors else "partial",
        "error": "; ".join(errors) or None,
        "repeats": len(results),
        "degraded": first.get("degraded", False),
        "runtime": first.get("runtime"),
        "runtime_details": first.get("runtime_details"),
        "parity": first.get("parity"),
        "params": first["params"],
        "file_bytes": first["file_bytes"],
        "gmacs": _significant(macs * size[0] * size[1] / 1e9, 6) if macs else None,
        "load_ms": float(np.median([r["load_ms"] for r in ok])),
        "first_ms": float(np.median([r["first_ms"] for r in ok])),
        "latency_ms": latency,
        "throughput_mp_s": size[0] * size[1] / 1e6 / (median_p50 / 1e3),
        "gmac_per_s": _significant(macs * size[0] * size[1] / 1e9 / (median_p50 / 1e3)) if macs else None,
        "baseline_rss_mb": float(np.median([r["baseline_rss_mb"] for r in ok])),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
        "peak_rss_above_baseline_mb": max(r["peak_rss_above_baseline_mb"] for r in ok),
        "peak_covers": first.get("peak_covers"),
        "psnr_vs_fp32_db": quality.get("psnr_vs_fp32_db"),
        "ssim_vs_fp32": quality.get("ssim_vs_fp32"),
        "identical_to_fp32": quality.get("identical_to_fp32"),
        "delta_psnr_vs_gt_db": quality.get("delta_psnr_vs_gt_db"),  # against the FP32 reference images' own
        "psnr_vs_gt_db": quality.get("psnr_vs_gt_db"),
        "ssim_vs_gt": quality.get("ssim_vs_gt"),
        "quality_scenes": quality.get("scenes"),
        "stress_worst_db": first.get("stress_worst_db"),  # INT8: the export's worst stress image against FP32
        "stages_ms": stages,
        "end_to_end_ms": sum(stages.values()),
        "encode_ms": {fmt: float(np.median([r["encode_ms"][fmt] for r in ok])) for fmt in first.get("encode_ms", {})},
    })
    return row


def reference_row(rows: list[dict], size: list[int]) -> dict | None:
    """The row ratios are taken against at this size: FP32 PyTorch, or where torch is not installed (a
    board profiling a bundle) the TFLite FP32 artifact measured there."""
    for label in (REFERENCE, BOARD_REFERENCE):
        found = next((r for r in rows if r["label"] == label and r["size"] == size and r["status"] in MEASURED), None)
        if found:
            return found
    return None


def ratios_against(row: dict, reference: dict | None) -> dict | None:
    """speed-up (>1 faster), memory and size (<1 smaller) and PSNR change against a reference row."""
    if reference is None or reference.get("status") not in MEASURED or row.get("status") not in MEASURED:
        return None

    def ratio(a, b):
        return _significant(a / b, 5) if a is not None and b else None

    pre_post = ("preprocess", "inference", "postprocess")
    return {
        "reference": f"{reference['label']} {reference['size'][0]}x{reference['size'][1]}",
        "speed_up": ratio(reference["latency_ms"]["p50"], row["latency_ms"]["p50"]),
        "end_to_end_speed_up": ratio(sum(reference["stages_ms"][k] for k in pre_post), sum(row["stages_ms"][k] for k in pre_post)),
        "memory": ratio(row["peak_rss_above_baseline_mb"], reference["peak_rss_above_baseline_mb"]),
        "peak_memory": ratio(row["peak_rss_mb"], reference["peak_rss_mb"]),
        "size": ratio(row["file_bytes"], reference["file_bytes"]),
        "params": ratio(row["params"], reference["params"]),
        "psnr_change_db": (round(row["psnr_vs_gt_db"] - reference["psnr_vs_gt_db"], 4)
                           if row.get("psnr_vs_gt_db") is not None and reference.get("psnr_vs_gt_db") is not None else None),
    }


def sid_comparison(rows: list[dict]) -> list[dict]:
    """LLPackNet (FP32 PyTorch) against the SID U-Net at each size where both ran, next to the paper's claims."""
    out = []
    for sid in (r for r in rows if r["label"] == SID_LABEL and r["status"] in ("ok", "partial")):
        ours = next((r for r in rows if r["label"] == REFERENCE and r["size"] == sid["size"] and r["status"] in ("ok", "partial")), None)
        if ours is None:
            continue
        out.append({
            "size": sid["size"],
            "fewer_parameters": round(sid["params"] / ours["params"], 3),
            "fewer_gmacs": round(sid["gmacs"] / ours["gmacs"], 3) if sid["gmacs"] and ours["gmacs"] else None,
            "less_memory": round(sid["peak_rss_above_baseline_mb"] / ours["peak_rss_above_baseline_mb"], 3),
            "faster": round(sid["latency_ms"]["p50"] / ours["latency_ms"]["p50"], 3),
            "paper_claims": SID_PAPER_CLAIMS,
        })
    return out


def judge_parity(row: dict) -> None:
    """Device output against the machine that built the bundle. Computed in FP32 on both: within 1e-5.
    Computed in f16 on the board (x86 has no FP16 arithmetic to compare with): >= 40 dB against the x86
    FP32 images and <= 0.3 dB loss against ground truth. INT8: exact through XNNPACK, within 8
    quantisation steps without it (other integer kernels round differently)."""
    from toolkit.deploy.export import REDUCED_MAX_GT_LOSS_DB, REDUCED_MIN_PSNR_VS_FP32  # the export's bar, on the board

    from .bundle import FP32_PARITY, INT8_STEPS_WITHOUT_XNNPACK

    parity = row.get("parity")
    if not parity or row["status"] not in MEASURED:
        return
    details = row.get("runtime_details") or {}
    xnnpack, arithmetic = details.get("xnnpack"), details.get("arithmetic")
    row.setdefault("warnings", [])
    if row["target"] == "tflite" and xnnpack is False:
        row["warnings"].append(
            "XNNPACK was not applied to the integer layers: this runtime runs them on its reference kernels (INT8 is then "
            "slower than FP32: use the FP32 artifact or install ai-edge-litert)" if row["precision"] == "int8"
            else "XNNPACK was not applied: this runtime runs the graph on its reference kernels")
    if row["precision"] == "fp16" and arithmetic != "f16":
        row["warnings"].append(f"FP16 arithmetic did not run here ({arithmetic or 'unknown'}): only the file is smaller "
                               "(a CPU without FP16 arithmetic, such as a Raspberry Pi 4's Cortex-A72)")
    if arithmetic in ("f16", "bf16"):
        psnr, loss = row.get("psnr_vs_fp32_db"), row.get("delta_psnr_vs_gt_db")
        parity["tolerance"] = (f">= {REDUCED_MIN_PSNR_VS_FP32:g} dB against the x86 FP32 images and <= {REDUCED_MAX_GT_LOSS_DB:g} dB "
                               f"loss against ground truth ({arithmetic} arithmetic)")
        parity["ok"] = (row.get("identical_to_fp32") or (psnr is not None and psnr >= REDUCED_MIN_PSNR_VS_FP32)) \
            and loss is not None and loss >= -REDUCED_MAX_GT_LOSS_DB
    elif row["precision"] in ("fp32", "fp16"):
        parity["tolerance"] = f"max abs difference <= {FP32_PARITY:g} (FP32 arithmetic on both machines)"
        parity["ok"] = parity["max_abs_diff"] <= FP32_PARITY
    elif xnnpack:
        parity["tolerance"] = "identical (XNNPACK on both machines)"
        parity["ok"] = parity["max_abs_diff"] == 0.0
    else:
        parity["tolerance"] = f"<= {INT8_STEPS_WITHOUT_XNNPACK} quantisation steps (no XNNPACK)"
        parity["ok"] = (parity["quantisation_steps"] or 0) <= INT8_STEPS_WITHOUT_XNNPACK
    for warning in row["warnings"]:
        log.warning("%s: %s", row["label"], warning)
    if not parity["ok"]:
        row["status"] = "failed"
        row["error"] = f"output differs from {parity['against']}: max abs {parity['max_abs_diff']:.3g}, allowed {parity['tolerance']}"


def build_report(specs, measured: dict, failures: list[dict], inputs: dict, options: dict, repeats: int,
                 machine: dict, device_profile: dict | None, started: str, peaks: dict | None = None) -> dict:
    rows = [aggregate(spec.label, spec.size, measured[spec.key]) for spec in specs]
    for failure in failures:  # never reached a worker: an export that failed, a runtime not installed (skipped)
        target, _, precision = failure["label"].rpartition("-")
        status = failure.get("status", "failed")
        rows.append({"label": failure["label"], "target": target, "precision": precision, "size": failure["size"],
                     "status": status, "error": failure["error"] if status == "skipped" else f"export failed: {failure['error']}",
                     "repeats": 0})
    for row in rows:
        judge_parity(row)
    for row in rows:
        reference = reference_row(rows, row["size"])
        row["vs_fp32"] = ratios_against(row, reference) if row["label"] != SID_LABEL or reference else None
        runtime = "torch" if row["label"] == SID_LABEL else row["target"]
        # Median against median: the model's GMAC/s comes from its median latency, so the peak's does
        # too (a best run against a median one would charge the machine's noise to the model).
        peak = (peaks or {}).get(runtime, {}).get("median_gmac_per_s")
        if peak and row.get("gmac_per_s") and row.get("precision") == "fp32":  # an FP32 peak says nothing of INT8 kernels
            row["fraction_of_peak"] = _significant(row["gmac_per_s"] / peak)
    sizes = {f"{h}x{w}": {k: v for k, v in info.items() if k != "folder"} for (h, w), info in inputs.items()}
    return {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_VERSION,
        "created": started,
        "machine": machine,
        "device_profile": device_profile["name"] if device_profile else None,
        "settings": {"runs": options["runs"], "warmup": options["warmup"], "repeats": repeats, "threads": options["threads"],
                     "timeout_s": options["timeout"], "process_per_model": True},
        "inputs": sizes,
        "results": rows,
        "vs_sid_unet": sid_comparison(rows),
        "machine_peak": peaks,
        "failed": sum(r["status"] == "failed" for r in rows),
        "skipped": sum(r["status"] == "skipped" for r in rows),
    }


# ---------------------------------------------------------------- rendering
def _fmt(value, spec: str = ".1f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _times(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _quality_text(row: dict) -> str:
    if row.get("identical_to_fp32"):
        return "same"
    return _fmt(row.get("psnr_vs_fp32_db"), ".2f")


NATIVE_ARITHMETIC = {"fp32": "f32", "fp16": "f16"}


def _label(row: dict) -> str:
    """The row's name, with the arithmetic it really ran in where that is not its precision's own
    (OpenVINO FP32 compiled to f16 on a Raspberry Pi 5, TFLite FP16 on a CPU without FP16)."""
    ran = (row.get("runtime_details") or {}).get("arithmetic")
    shown = f" [{ran}]" if ran and NATIVE_ARITHMETIC.get(row.get("precision")) not in (None, ran) else ""
    return row["label"] + shown + (" DEGRADED" if row.get("degraded") else "")


def render_table(report: dict) -> str:
    """The terminal table: one line per model and size."""
    head = (f"{'model':<27}{'size':>10}{'params':>11}{'MB':>7}{'GMAC':>8}{'p50 ms':>10}{'noise':>7}{'MP/s':>7}"
            f"{'peak MB':>9}{'above':>7}{'dB/FP32':>9}{'worst':>8}{'dB/GT':>7}{'speed':>7}{'mem':>6}")
    lines = [head]
    for row in report["results"]:
        size = f"{row['size'][0]}x{row['size'][1]}"
        if row["status"] not in MEASURED:
            lines.append(f"{_label(row):<27}{size:>10}  {row['status'].upper()}: {row['error']}")
            continue
        v = row.get("vs_fp32") or {}
        lines.append(
            f"{_label(row):<27}{size:>10}{row['params']:>11,}{row['file_bytes'] / 1e6:>7.2f}{_fmt(row['gmacs'], '.3g'):>8}"
            f"{row['latency_ms']['p50']:>10.1f}{row['latency_ms']['noise_pct']:>6.0f}%{row['throughput_mp_s']:>7.2f}"
            f"{row['peak_rss_mb']:>9.0f}{row['peak_rss_above_baseline_mb']:>7.0f}{_quality_text(row):>9}"
            f"{_fmt(row.get('stress_worst_db'), '.1f'):>8}"
            f"{_fmt(row.get('psnr_vs_gt_db'), '.2f'):>7}{_times(v.get('speed_up')):>7}{_times(v.get('memory')):>6}")
    for sid in report.get("vs_sid_unet", []):
        lines.append(f"vs SID U-Net at {sid['size'][0]}x{sid['size'][1]} (FP32 PyTorch both): {sid['fewer_parameters']:.2f}x fewer parameters, "
                     f"{_fmt(sid['fewer_gmacs'], '.2f')}x fewer GMACs, {sid['less_memory']:.2f}x less memory, {sid['faster']:.2f}x faster "
                     f"(paper: 2-7x, -, 2-3x, 5-20x)")
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [
        "# LLPackNet Edge profile", "",
        f"- machine: {m.get('board') or m['cpu']} ({m['arch']}, {m['cores_logical']} logical cores, {m['memory_gb']} GB)"
        + (f", EMULATED ({m['emulated']}): timings are not a real board's" if m.get("emulated") else ""),
        f"- CPU: {m['cpu']}; flags: {', '.join(m['flags']) or '-'}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}",
        f"- settings: {s['threads'] or 'runtime default'} threads, {s['warmup']} warm-up + {s['runs']} timed runs in each of "
        f"{s['repeats']} fresh processes per model, time limit {s['timeout_s']:g} s",
        f"- created: {report['created']}" + (f"; device profile: {report['device_profile']}" if report.get("device_profile") else ""),
        "",
        "Ratios are against the FP32 PyTorch reference of the same run and size (on a board without torch: the TFLite FP32 "
        "artifact there). A label's `[f16]` or `[f32]` is the arithmetic the runtime really used where it differs from the "
        "artifact's precision. `noise` is the larger of the spread of "
        "the median between fresh processes and the p10-p90 range inside one; two runs agree when their medians differ by "
        "less than it. Memory is the process's peak resident set during inference; `above import` subtracts the resident "
        "set after importing the runtime, before loading the model. `stress worst` is an INT8 or FP16 artifact's worst image of the stress "
        "set against FP32, from its export (bright, clipped, over-amplified and very noisy inputs; see docs/export.md).", "",
        "| model | size | params (from file) | MB | GMAC | load ms | first ms | p50 ms | p90 ms | p99 ms | noise | MP/s | "
        "peak MB | above import MB | PSNR vs FP32 | stress worst vs FP32 | PSNR / SSIM vs GT | speed-up | memory | size |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        size = f"{row['size'][0]}x{row['size'][1]}"
        if row["status"] not in MEASURED:
            lines.append(f"| {_label(row)} | {size} | {row['status'].upper()}: {row['error']} |" + " |" * 17)
            continue
        lat, v = row["latency_ms"], row.get("vs_fp32") or {}
        lines.append(
            f"| {_label(row)} | {size} | {row['params']:,} | {row['file_bytes'] / 1e6:.2f} | {_fmt(row['gmacs'], '.3g')} | "
            f"{row['load_ms']:.0f} | {row['first_ms']:.0f} | {lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} | "
            f"{lat['noise_pct']:.0f}% | {row['throughput_mp_s']:.2f} | {row['peak_rss_mb']:.0f} | {row['peak_rss_above_baseline_mb']:.0f} | "
            f"{_quality_text(row)} | {_fmt(row.get('stress_worst_db'), '.2f')} | "
            f"{_fmt(row.get('psnr_vs_gt_db'), '.2f')} / {_fmt(row.get('ssim_vs_gt'), '.3f')} | "
            f"{_times(v.get('speed_up'))} | {_times(v.get('memory'))} | {_times(v.get('size'))} |")
    lines += ["", "## Stages a camera pays for (median ms)", "",
              "| model | size | RAW decode | pre-processing | inference | post-processing | end to end | outside the network "
              "| encode JPEG | encode PNG | encode TIFF |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["results"]:
        if row["status"] not in MEASURED:
            continue
        st = row["stages_ms"]
        outside = 100.0 * (st["preprocess"] + st["postprocess"]) / (st["preprocess"] + st["inference"] + st["postprocess"])
        lines.append(f"| {_label(row)} | {row['size'][0]}x{row['size'][1]} | {st['decode']:.1f} | {st['preprocess']:.1f} | "
                     f"{st['inference']:.1f} | {st['postprocess']:.1f} | {row['end_to_end_ms']:.1f} | {outside:.1f}% | "
                     + " | ".join(_fmt(row.get("encode_ms", {}).get(fmt), ".1f") for fmt in ("jpeg", "png", "tiff")) + " |")
    if report.get("vs_sid_unet"):
        lines += ["", "## LLPackNet against the SID U-Net (both FP32 PyTorch, this run)", "",
                  "| size | fewer parameters | fewer GMACs | less memory | faster |", "|---|---|---|---|---|"]
        for sid in report["vs_sid_unet"]:
            lines.append(f"| {sid['size'][0]}x{sid['size'][1]} | {sid['fewer_parameters']:.2f}x | {_fmt(sid['fewer_gmacs'], '.2f')}x | "
                         f"{sid['less_memory']:.2f}x | {sid['faster']:.2f}x |")
        lines.append("| paper's claim | 2-7x | - | 2-3x | 5-20x |")
    if report.get("machine_peak"):
        lines += ["", "## Compute efficiency (FP32 peak: one large 3x3 convolution in the same runtime, same threads)", "",
                  "| runtime | peak GMAC/s (best / median run) | model | size | achieved GMAC/s (median) | fraction of the median peak |",
                  "|---|---|---|---|---|---|"]
        for runtime, peak in report["machine_peak"].items():
            for row in (r for r in report["results"] if r.get("fraction_of_peak") is not None
                        and ("torch" if r["label"] == SID_LABEL else r["target"]) == runtime):
                lines.append(f"| {runtime} | {peak['peak_gmac_per_s']:.1f} / {peak['median_gmac_per_s']:.1f} | {_label(row)} | "
                             f"{row['size'][0]}x{row['size'][1]} | "
                             f"{row['gmac_per_s']:.1f} | {100 * row['fraction_of_peak']:.0f}% |")
            if "error" in peak:
                lines.append(f"| {runtime} | failed: {peak['error']} | | | | |")
    lines += ["", "## Quality inputs", ""]
    for size, info in report["inputs"].items():
        lines.append(f"- {size}: {info['count']} {info['source']}; camera stages on a generated dark DNG (x{info['sample_ratio']:g})")
    return "\n".join(lines) + "\n"


def write_plots(run_dir: Path, report: dict) -> list[str]:
    """latency.png, memory.png and quality_vs_latency.png; skipped (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("plots skipped: matplotlib is not installed (pip install matplotlib)")
        return []
    rows = [r for r in report["results"] if r["status"] in MEASURED]
    if not rows:
        return []
    names = [f"{r['label']}\n{r['size'][0]}x{r['size'][1]}" for r in rows]
    colours = ["#444444" if r["label"] == REFERENCE else "#999999" if r["label"] == SID_LABEL else "#1f77b4" if r["precision"] == "fp32"
               else "#ff7f0e" for r in rows]
    written = []

    def save(fig, name):
        fig.tight_layout()
        with atomic_path(run_dir / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append(name)

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4.2))
    p50 = [r["latency_ms"]["p50"] for r in rows]
    low = [r["latency_ms"]["p50"] - r["latency_ms"]["min"] for r in rows]
    high = [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in rows]
    ax.bar(names, p50, color=colours, yerr=[low, high], capsize=3)
    ax.set_ylabel("latency ms (median; whiskers min..p90)")
    ax.set_title("Inference latency per target (lower is better)")
    ax.tick_params(axis="x", labelsize=7)
    save(fig, "latency.png")

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4.2))
    base = [r["baseline_rss_mb"] for r in rows]
    above = [r["peak_rss_above_baseline_mb"] for r in rows]
    ax.bar(names, base, color="#dddddd", label="runtime after import")
    ax.bar(names, above, bottom=base, color=colours, label="model + inference")
    ax.set_ylabel("peak resident memory MB")
    ax.set_title("Peak memory per target (lower is better)")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    save(fig, "memory.png")

    scored = [r for r in rows if r.get("psnr_vs_gt_db") is not None]
    if scored:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for r in scored:
            ax.scatter(r["latency_ms"]["p50"], r["psnr_vs_gt_db"], s=40, color="#444444" if r["label"] == REFERENCE
                       else "#1f77b4" if r["precision"] == "fp32" else "#ff7f0e")
            ax.annotate(f"{r['label']} {r['size'][0]}x{r['size'][1]}", (r["latency_ms"]["p50"], r["psnr_vs_gt_db"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("latency ms (median, log scale)")
        ax.set_ylabel("PSNR vs ground truth dB")
        ax.set_title("Quality against latency (up and left is better)")
        save(fig, "quality_vs_latency.png")
    return written


def write_report(run_dir: Path, report: dict) -> None:
    """report.json, report.md and the plots, each atomically."""
    report["plots"] = write_plots(run_dir, report)
    atomic_write_json(run_dir / "report.json", report)
    atomic_write_bytes(run_dir / "report.md", render_markdown(report).encode())


def read_report(path: str | os.PathLike) -> dict:
    """A report.json (or the folder holding one), checked for its schema."""
    file = Path(path)
    if file.is_dir():
        file = file / "report.json"
    if not file.is_file():
        raise UserError(f"{path} is not a profiler report", "give a report.json or the folder 'llpack profile' wrote")
    report = read_json_document(file, REPORT_SCHEMA, REPORT_VERSION, "profile report",
                                "give a report.json written by 'llpack profile' with this toolkit")
    if not isinstance(report.get("results"), list) or not isinstance(report.get("machine"), dict):
        raise UserError(f"{file} lacks its results or machine section", "profile again")
    return report


# ---------------------------------------------------------------- several machines
def machine_name(report: dict) -> str:
    m = report["machine"]
    name = m.get("board") or f"{m['cpu']} ({m['arch']})"
    return name + (f" [emulated {m['emulated']}]" if m.get("emulated") else "")


def merge_reports(paths: list[str | os.PathLike], out: str | os.PathLike | None = None) -> dict:
    """Reports from several machines side by side, ratios against the FP32 PyTorch run at the same size."""
    reports = [read_report(p) for p in paths]
    rows = []
    for report in reports:
        for row in report["results"]:
            rows.append({**row, "machine": machine_name(report), "emulated": bool(report["machine"].get("emulated"))})
    references = [r for r in rows if r["label"] == REFERENCE and r["status"] in MEASURED]
    for row in rows:
        candidates = [r for r in references if r["size"] == row["size"]]
        reference = min(candidates, key=lambda r: r["emulated"], default=None)  # a real machine's reference first
        row["vs_fp32"] = ratios_against(row, reference)
    merged = {"schema": "llpacknet-edge/merged-report", "schema_version": 1,
              "machines": [{"name": machine_name(r), **r["machine"]} for r in reports],
              "sources": [str(p) for p in paths], "results": rows}
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "merged.json", merged)
        atomic_write_bytes(folder / "merged.md", (render_merged(merged) + "\n").encode())
        merged["plots"] = _merged_plot(folder, merged)
        merged["path"] = str(folder)
    return merged


def render_merged(merged: dict) -> str:
    lines = ["| machine | model | size | p50 ms | noise | peak MB | above import MB | PSNR vs FP32 | parity | speed-up vs FP32 PyTorch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in merged["results"]:
        size = f"{row['size'][0]}x{row['size'][1]}"
        if row["status"] not in MEASURED:
            lines.append(f"| {row['machine']} | {_label(row)} | {size} | {row['status'].upper()}: {row['error']} | | | | | | |")
            continue
        parity = row.get("parity")
        parity_text = "-" if not parity else f"{'ok' if parity.get('ok') else 'MISMATCH'} ({parity['max_abs_diff']:.2g})"
        v = row.get("vs_fp32") or {}
        lines.append(f"| {row['machine']} | {_label(row)} | {size} | {row['latency_ms']['p50']:.1f} | {row['latency_ms']['noise_pct']:.0f}% | "
                     f"{row['peak_rss_mb']:.0f} | {row['peak_rss_above_baseline_mb']:.0f} | {_quality_text(row)} | {parity_text} | "
                     f"{_times(v.get('speed_up'))} |")
    if any(r["emulated"] for r in merged["results"]):
        lines.append("\nEmulated rows ran under qemu user-mode emulation: their timings are not a real board's.")
    return "\n".join(lines)


def _merged_plot(folder: Path, merged: dict) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = [r for r in merged["results"] if r["status"] in MEASURED]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(max(6, 1.0 * len(rows)), 4.5))
    machines = list(dict.fromkeys(r["machine"] for r in rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [f"{r['label']}\n{r['size'][0]}x{r['size'][1]}\n{machines.index(r['machine']) + 1}" for r in rows]
    ax.bar(names, [r["latency_ms"]["p50"] for r in rows], color=[colours[machines.index(r["machine"]) % len(colours)] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("latency ms (median, log scale)")
    ax.set_title("Latency per machine: " + "; ".join(f"{i + 1} = {m}" for i, m in enumerate(machines)), fontsize=8)
    ax.tick_params(axis="x", labelsize=6)
    fig.tight_layout()
    with atomic_path(folder / "merged.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return ["merged.png"]
