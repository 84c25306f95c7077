"""Batch planning (pure: no models, no files written): prompt files → jobs.

A prompt file holds one prompt per line, or JSON objects (JSONL) with `prompt` and optional
`seed`, `frames`, `size` ("WxH"), `output`, ... Each item's output name comes from the `-o`
pattern (`{index}`, `{slug}`, `{seed}`, e.g. `out/{index:03d}-{slug}.mov`). A bad line becomes
a job that carries its error, so it fails alone; the others still run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rgbacli.errors import UsageError
from rgbacli.pipelines.params import Limits, params_from_sampling


@dataclass
class BatchItem:
    """One line of the prompt file, parsed; `error` is set when the line itself is bad."""

    index: int
    line: int
    prompt: str = ""
    overrides: dict = field(default_factory=dict)
    output: str | None = None
    error: str | None = None


def slugify(text: str, limit: int = 40) -> str:
    """Lower-case ASCII words joined by '-', for deterministic file names."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (slug[:limit].rstrip("-")) or "clip"


def parse_size(size: str) -> tuple[int, int]:
    """'832x480' → (832, 480); anything else is a usage error naming the value."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(size))
    if not m:
        raise UsageError(f"bad size '{size}' (expected WxH, e.g. 832x480)")
    return int(m.group(1)), int(m.group(2))


_ITEM_KEYS = {"prompt", "seed", "frames", "size", "output", "negative", "steps", "guidance", "shift", "fps",
              "trajectory"}


def parse_prompt_lines(text: str) -> list[BatchItem]:
    """Parse a prompt file: blank lines and '#' comments are skipped; indices count items."""
    items: list[BatchItem] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        item = BatchItem(index=len(items), line=lineno)
        items.append(item)
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                item.error = f"line {lineno}: invalid JSON ({e.msg})"
                continue
            unknown = sorted(set(obj) - _ITEM_KEYS)
            if unknown:
                item.error = f"line {lineno}: unknown key '{unknown[0]}'"
                continue
            prompt = obj.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                item.error = f"line {lineno}: missing or empty 'prompt'"
                continue
            item.prompt = prompt.strip()
            try:
                for key in ("seed", "frames", "steps"):
                    if key in obj:
                        item.overrides[key] = int(obj[key])
                for key in ("guidance", "shift", "fps"):
                    if key in obj:
                        item.overrides[key] = float(obj[key])
                if "negative" in obj:
                    item.overrides["negative"] = str(obj["negative"])
                if "size" in obj:
                    item.overrides["width"], item.overrides["height"] = parse_size(obj["size"])
            except (TypeError, ValueError, UsageError) as e:
                item.error = f"line {lineno}: {e}"
                continue
            if "output" in obj:
                item.output = str(obj["output"])
            if "trajectory" in obj:  # a file, a list of files, or an inline {"canvas", "objects"} document
                from rgbacli.pipelines.trajectory_input import item_trajectories

                try:
                    item.overrides["trajectory_given"] = item_trajectories(obj["trajectory"], f"line {lineno} trajectory")
                except UsageError as e:
                    item.error = f"line {lineno}: {e}"
                    continue
        else:
            item.prompt = line
    return items


def output_for(pattern: str, item: BatchItem, seed: int) -> str:
    """Expand the -o pattern for one item ({index}, {slug}, {seed}); explicit outputs win."""
    if item.output:
        return item.output
    try:
        return pattern.format(index=item.index, slug=slugify(item.prompt), seed=seed)
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(f"bad output pattern '{pattern}': {e} (use {{index}}, {{slug}}, {{seed}})") from None


@dataclass
class Job:
    """One unit of batch work, picklable (an executor may run it in another process).

    `params` are the full generate parameters (the preset's defaults filled in), `options` how to
    write the result (preview, premultiplied, force). A job with `error` set fails without running."""

    index: int
    line: int
    prompt: str
    kind: str = "generate"
    seed: int | None = None
    output: str | None = None
    params: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    error: str | None = None

    def entry(self) -> dict:
        """The manifest entry this job starts from (status and figures are added as it runs)."""
        entry = {"index": self.index, "line": self.line, "prompt": self.prompt}
        if self.output is not None:
            entry.update(output=self.output, seed=self.seed, params=self.params)
        return entry


def preview_paths(output: str) -> list[str]:
    """<out>.preview.mp4 and <out>.sheet.png beside an output (a frame pattern loses its %04d)."""
    stem = Path(output).parent / re.sub(r"\.?%0?\d*d$", "", Path(output).with_suffix("").name)
    return [f"{stem}.preview.mp4", f"{stem}.sheet.png"]


def default_output(prompt: str) -> str:
    """<slug>.mov in the current folder; -2, -3 … are appended rather than overwrite anything."""
    base = slugify(prompt)
    candidate, n = f"{base}.mov", 2
    while Path(candidate).exists():
        candidate, n = f"{base}-{n}.mov", n + 1
    return candidate


def generate_job(index: int, line: int, prompt: str, seed: int, output: str, common: dict, sampling: dict,
                 options: dict, limits: Limits | None = None) -> Job:
    """A generate job with its parameters filled from the preset's `sampling` defaults and checked
    (against the model's `limits` when given): a UsageError names the bad value and its limit.
    Trajectories are resampled to its frames and size."""
    common = dict(common)
    given, error = common.pop("trajectory_given", None), common.pop("trajectory_error", None)
    params = params_from_sampling(sampling, prompt, seed=seed, **common).validate(limits)
    if given:
        from rgbacli.pipelines.trajectory_input import resolve

        if error:
            raise UsageError(error)
        params.trajectory = resolve(given, params.frames, params.width, params.height, params.trajectory_method)
    return Job(index, line, prompt, "generate", seed, output, params.to_dict(), dict(options))


def plan_generate(text: str, pattern: str, seed: int, common: dict, sampling: dict, options: dict,
                  limits: Limits | None = None) -> list[Job]:
    """Every item of a prompt file as a job: item i gets `seed + i` unless it sets a seed, its own
    overrides over `common`, and its output from the pattern. An item whose values break a rule
    (or the model's `limits`) becomes a job carrying its error, so it fails alone before any work."""
    jobs = []
    for item in parse_prompt_lines(text):
        if item.error:
            jobs.append(Job(item.index, item.line, item.prompt, error=item.error))
            continue
        item_seed = item.overrides.get("seed", seed + item.index)
        merged = {**common, **{k: v for k, v in item.overrides.items() if k != "seed"}}
        try:
            out = output_for(pattern, item, item_seed)
            jobs.append(generate_job(item.index, item.line, item.prompt, item_seed, out, merged, sampling, options,
                                     limits))
        except UsageError as e:
            jobs.append(Job(item.index, item.line, item.prompt, error=f"line {item.line}: {e}"))
    return jobs
