"""Compare two RGBA clips frame by frame, for render regression checks.

Both inputs are read as straight alpha (rgbacli.media.read), then colour is compared
PREMULTIPLIED (c = round(C·α/255)), so colour hidden under α = 0 cannot count:

- alpha-iou: |A ∩ B| / |A ∪ B| of the masks α > 0.5 (α ≥ 128); 1 when both masks are empty.
- alpha-mae: mean |αA − αB|, alpha in [0, 1].
- psnr: 10·log10(1 / MSE) of premultiplied RGB in [0, 1]; inf for identical frames. The clip
  figure ("mean") is the PSNR of the mean MSE over all frames, as FFmpeg's psnr filter does.
- ssim: kornia.metrics.ssim (Gaussian window 11, σ 1.5, reflect padding) on premultiplied
  RGB in [0, 1], averaged over pixels and channels.

Frames stream: each input is decoded in a worker thread and only a small SSIM batch is held.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from rgbacli.errors import MediaError, RgbaError, UsageError
from rgbacli.media.clip import premultiply

METRICS = ("alpha-iou", "alpha-mae", "psnr", "ssim")
SSIM_WINDOW = 11  # the usual SSIM window (Wang et al. 2004); smaller only for frames under 6 px
SSIM_BATCH = 4  # frames per kornia call: amortises torch overhead, keeps memory small
DIFF_GAIN = 4  # --diff pictures show |difference| × 4 (clipped), so small errors are visible
DIFF_GAP = 2  # grey columns between the alpha and the colour halves of a --diff picture
HIGHER_IS_BETTER = {"alpha-iou": True, "alpha-mae": False, "psnr": True, "ssim": True}


def parse_metrics(text: str) -> list[str]:
    """'alpha-iou,psnr' → ['alpha-iou', 'psnr'] (order kept, duplicates dropped); UsageError otherwise."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise UsageError(f"--metric needs at least one of {','.join(METRICS)}")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric {unknown[0]!r} in --metric (known: {','.join(METRICS)})")
    return list(dict.fromkeys(names))


@dataclass
class CompareThresholds:
    """Per-frame limits: a frame fails when its figure is on the wrong side of one."""

    min_alpha_iou: float | None = None
    max_alpha_mae: float | None = None
    min_psnr: float | None = None
    min_ssim: float | None = None

    def items(self) -> list[tuple[str, str, float]]:
        """(metric, option, value) for every limit that is set."""
        rows = [("alpha-iou", "--min-alpha-iou", self.min_alpha_iou), ("alpha-mae", "--max-alpha-mae", self.max_alpha_mae),
                ("psnr", "--min-psnr", self.min_psnr), ("ssim", "--min-ssim", self.min_ssim)]
        return [(m, opt, v) for m, opt, v in rows if v is not None]

    def validate(self) -> None:
        ranges = {"alpha-iou": (0.0, 1.0), "alpha-mae": (0.0, 1.0), "psnr": (0.0, math.inf), "ssim": (-1.0, 1.0)}
        for metric, opt, v in self.items():
            lo, hi = ranges[metric]
            if not (lo <= v <= hi):  # also refuses NaN
                what = "a number of dB ≥ 0 (or inf)" if metric == "psnr" else f"between {lo:g} and {hi:g}"
                raise UsageError(f"{opt} must be {what}, got {v:g}")


def fails(metric: str, value: float, limit: float) -> bool:
    return value < limit if HIGHER_IS_BETTER[metric] else value > limit


# --- per-frame figures ----------------------------------------------------------------------


def alpha_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the α > 0.5 masks of two uint8 alpha planes; 1 when both are empty."""
    ma, mb = a >= 128, b >= 128
    union = np.count_nonzero(ma | mb)
    return 1.0 if union == 0 else np.count_nonzero(ma & mb) / union


def alpha_mae(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 alpha planes, in [0, 1]."""
    return float(np.abs(np.subtract(a, b, dtype=np.int16)).sum()) / (a.size * 255.0)


def colour_mse(pa: np.ndarray, pb: np.ndarray) -> float:
    """MSE of two uint8 (premultiplied) RGB arrays, in [0, 1] units; exact integer sum."""
    d = np.subtract(pa, pb, dtype=np.int32)
    return float(np.square(d, dtype=np.int64).sum()) / (d.size * 255.0 * 255.0)


def psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim_frames(pa: list[np.ndarray], pb: list[np.ndarray]) -> list[float]:
    """Mean SSIM of each pair of uint8 (H, W, 3) frames, through kornia (imported here: it is slow)."""
    import torch

    try:
        from kornia.metrics import ssim
    except ImportError:
        raise RgbaError("SSIM needs the kornia package (pip install kornia), or leave ssim out of --metric") from None

    h, w = pa[0].shape[:2]
    window = min(SSIM_WINDOW, 2 * min(h, w) - 1)  # reflect padding needs more than window // 2 pixels
    with torch.no_grad():
        x = torch.from_numpy(np.stack(pa)).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(np.stack(pb)).permute(0, 3, 1, 2).float().div_(255.0)
        # eps=0: identical frames score exactly 1 (the denominator is ≥ c1·c2 > 0 anyway)
        m = ssim(x.contiguous(), y.contiguous(), window, max_val=1.0, eps=0.0)
        return [float(v) for v in m.double().mean(dim=(1, 2, 3))]


@contextmanager
def _torch_threads_for_ssim(enabled: bool):
    """Half the cores for torch while SSIM runs, the rest for the decoder threads: OpenMP threads
    that share cores with busy decoders stall each other (measured: 1 thread is fastest on 2 cores)."""
    if not enabled:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 2) // 2)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def diff_picture(a: np.ndarray, b: np.ndarray, pa: np.ndarray | None = None, pb: np.ndarray | None = None) -> np.ndarray:
    """Opaque (H, 2W + DIFF_GAP, 4) uint8: |αA − αB| in grey on the left, |premultiplied RGB
    difference| on the right, both × DIFF_GAIN and clipped, a grey gap between."""
    pa = premultiply(a) if pa is None else pa
    pb = premultiply(b) if pb is None else pb
    h, w = a.shape[:2]
    d = np.minimum(np.abs(np.subtract(pa, pb, dtype=np.int16)) * DIFF_GAIN, 255).astype(np.uint8)
    out = np.empty((h, 2 * w + DIFF_GAP, 4), np.uint8)
    out[..., 3] = 255
    out[:, :w, :3] = d[..., 3:4]
    out[:, w : w + DIFF_GAP, :3] = 128
    out[:, w + DIFF_GAP :, :3] = d[..., :3]
    return out


# --- files ------------------------------------------------------------------------------------


@dataclass
class CompareResult:
    """Everything `rgba compare` reports. Frame numbers are 0-based."""

    a: str
    b: str
    frames: int
    size: tuple[int, int]  # A's (w, h); B is compared at this size
    b_size: tuple[int, int]
    resized: bool
    fps: float
    b_fps: float
    metrics: list[str]
    per_frame: list[dict]  # {"frame": i, metric: value, ...}
    summary: dict[str, dict]  # metric → {"mean", "worst", "worst_frame"}
    thresholds: dict[str, dict]  # metric → {"option", "value"}
    failures: list[dict]  # {"metric", "option", "threshold", "frames", "values"}
    diff: str | None = None
    diff_frame: int | None = None  # the frame a single-picture --diff shows
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        """JSON-safe dict: inf becomes the string "inf" (JSON has no infinity), everywhere."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["size"], d["b_size"], d["passed"] = list(self.size), list(self.b_size), self.passed
        return _json_safe(d)


def _json_safe(x):
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


@dataclass
class _Acc:
    """Running per-frame figures (and PSNR's MSEs, for the clip figure)."""

    metrics: list[str]
    rows: list[dict] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, dict]:
        out = {}
        for m in self.metrics:
            vals = [r[m] for r in self.rows]
            i = int(np.argmax(vals) if not HIGHER_IS_BETTER[m] else np.argmin(vals))
            mean = psnr_from_mse(float(np.mean(self.mse))) if m == "psnr" else float(np.mean(vals))
            out[m] = {"mean": mean, "worst": vals[i], "worst_frame": i}
        return out


def _frame_count_error(a: str, b: str, done: int, ia: Iterator, ib: Iterator, fa, fb) -> UsageError:
    """Count the rest of the longer input, for a message with both lengths."""
    na = done + (0 if fa is None else 1 + sum(1 for _ in ia))
    nb = done + (0 if fb is None else 1 + sum(1 for _ in ib))
    return UsageError(f"{a} has {na} frames but {b} has {nb}: compare needs the same number of frames")


def compare_files(a: str | os.PathLike, b: str | os.PathLike, *, metrics: list[str] | tuple[str, ...] = METRICS,
                  thresholds: CompareThresholds | None = None, resize: bool = False,
                  diff: str | os.PathLike | None = None, force: bool = False, premultiplied: bool = False,
                  on_frame: Callable[[int, int | None], None] | None = None) -> CompareResult:
    """Compare B against A (the reference) frame by frame; see the module docstring for the figures.

    Different sizes are a UsageError unless `resize` (B is resized to A with the premultiplied
    Lanczos of `rgba composite --scale`); different frame counts always are. `diff` writes a
    picture (single .png/.jpg: the frame that differs most) or a clip of diff_picture frames.
    """
    from rgbacli.media.composite import resize_frames
    from rgbacli.media.inspect import open_checked, os_errors_as_media_errors
    from rgbacli.media.threads import prefetch
    from rgbacli.media.write import check_writable, open_writer

    t0 = time.perf_counter()
    thresholds = thresholds or CompareThresholds()
    thresholds.validate()
    wanted = list(dict.fromkeys([*metrics, *(m for m, _, _ in thresholds.items())]))
    order = [m for m in METRICS if m in wanted]
    single_diff = False
    if diff is not None:
        single_diff = check_writable(diff, force).name in ("png", "jpg")
    sa = open_checked(a, premultiplied=premultiplied)
    sb = open_checked(b, premultiplied=premultiplied)
    if sa.size != sb.size and not resize:
        raise UsageError(f"{a} is {sa.width}x{sa.height} but {b} is {sb.width}x{sb.height} "
                         f"(pass --resize to resize B to A)")
    size = sa.size
    fb_frames = map(lambda f: resize_frames(f[None], size)[0], sb) if sa.size != sb.size else iter(sb)
    ia, ib = prefetch(iter(sa)), prefetch(fb_frames)
    acc = _Acc(order)
    need_colour = diff is not None or "psnr" in wanted or "ssim" in wanted
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []  # frames waiting for a batched SSIM
    worst_score, worst_pic, worst_frame = -1, None, None

    def flush_ssim() -> None:
        if pending:
            for (i, _, _), v in zip(pending, ssim_frames([p[1] for p in pending], [p[2] for p in pending])):
                acc.rows[i]["ssim"] = v
            pending.clear()

    with ExitStack() as stack:
        stack.enter_context(os_errors_as_media_errors(diff if diff is not None else b))  # exits last
        stack.enter_context(_torch_threads_for_ssim("ssim" in wanted))
        stack.callback(ia.close)
        stack.callback(ib.close)
        writer = None
        if diff is not None and not single_diff:
            writer = stack.enter_context(open_writer(diff, fps=sa.fps, force=force))
        i = 0
        while True:
            fa, fb = next(ia, None), next(ib, None)
            if fa is None or fb is None:
                if fa is None and fb is None:
                    break
                raise _frame_count_error(str(a), str(b), i, ia, ib, fa, fb)
            pa, pb = (premultiply(fa), premultiply(fb)) if need_colour else (None, None)
            row: dict = {"frame": i}
            if "alpha-iou" in wanted:
                row["alpha-iou"] = alpha_iou(fa[..., 3], fb[..., 3])
            if "alpha-mae" in wanted:
                row["alpha-mae"] = alpha_mae(fa[..., 3], fb[..., 3])
            if "psnr" in wanted:
                mse = colour_mse(pa[..., :3], pb[..., :3])
                acc.mse.append(mse)
                row["psnr"] = psnr_from_mse(mse)
            acc.rows.append(row)
            if "ssim" in wanted:
                pending.append((i, pa[..., :3], pb[..., :3]))
                if len(pending) >= SSIM_BATCH:
                    flush_ssim()
            if diff is not None:
                pic = diff_picture(fa, fb, pa, pb)
                if writer is not None:
                    writer.write(pic)
                else:
                    score = int(np.abs(np.subtract(pa, pb, dtype=np.int16)).sum())
                    if score > worst_score:
                        worst_score, worst_pic, worst_frame = score, pic, i
            i += 1
            if on_frame:
                on_frame(i, sa.n_frames)
        if i == 0:  # the readers refuse empty files; a guard so the summary never sees zero frames
            raise MediaError(f"{a}: contains no frames")
        flush_ssim()
        if worst_pic is not None:
            with open_writer(diff, fps=sa.fps, force=force) as w:
                w.write(worst_pic)

    failures = []
    for metric, opt, limit in thresholds.items():
        bad = [r for r in acc.rows if fails(metric, r[metric], limit)]
        if bad:
            failures.append({"metric": metric, "option": opt, "threshold": limit,
                             "frames": [r["frame"] for r in bad], "values": [r[metric] for r in bad]})
    rows = [{k: r[k] for k in ["frame", *order]} for r in acc.rows]
    return CompareResult(
        a=str(a), b=str(b), frames=len(rows), size=size, b_size=sb.size, resized=sa.size != sb.size,
        fps=sa.fps, b_fps=sb.fps, metrics=order, per_frame=rows, summary=acc.summary(),
        thresholds={m: {"option": opt, "value": v} for m, opt, v in thresholds.items()}, failures=failures,
        diff=str(diff) if diff is not None else None, diff_frame=worst_frame if single_diff else None,
        seconds=round(time.perf_counter() - t0, 3),
    )


def format_value(metric: str, v: float) -> str:
    """How a figure is printed in tables and failure lines."""
    if metric == "psnr":
        return "inf" if math.isinf(v) else f"{v:.2f} dB"
    return f"{v:.5f}" if metric == "alpha-mae" else f"{v:.4f}"


def failure_lines(res: CompareResult, most: int = 10) -> list[str]:
    """One line per failed threshold, listing the failing frames (the first `most` of them)."""
    out = []
    for f in res.failures:
        m = f["metric"]
        shown = ", ".join(f"{i} ({format_value(m, v)})" for i, v in zip(f["frames"][:most], f["values"][:most]))
        more = f", … and {len(f['frames']) - most} more (see --json)" if len(f["frames"]) > most else ""
        side = "below" if HIGHER_IS_BETTER[m] else "above"
        out.append(f"{res.b} vs {res.a}: {m} {side} {f['option']} {f['threshold']:g} in {len(f['frames'])} of "
                   f"{res.frames} frames: {shown}{more}")
    return out


def diff_size(size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) of a --diff picture for frames of `size`."""
    return 2 * size[0] + DIFF_GAP, size[1]

