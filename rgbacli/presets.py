"""Presets: TOML files that name a model's weight files, architecture settings and sampling defaults.

A preset is looked up by name among the shipped presets (presets/*.toml, shipped in the
package as rgbacli/_presets) or given as a path to the user's own TOML. Weight files are found
offline only: `--weights-dir`, then each folder in `RGBA_WEIGHTS` (os.pathsep-separated), then
the local Hugging Face cache; the embedded tiny weights live inside the package.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rgbacli.errors import UsageError, WeightsError

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"

# Sampling defaults a preset may override; the CLI flags override the preset.
SAMPLING_KEYS = {
    "width": int, "height": int, "frames": int, "fps": float, "steps": int,
    "guidance": float, "shift": float, "solver": str, "negative": str,
    "motion_guidance": float, "dynamic_cfg": bool, "alpha_shift": float, "trajectory_shift": float,
    "trajectory_direction": lambda v: [float(x) for x in v],  # the noise method's per-channel shift
    "trajectory_guidance": float,
}
COMPONENT_KEYS = {"path", "repo", "format", "optional", "config", "scale", "kind", "rank", "alpha", "tokenizer",
                  "seed", "random_lora", "zero_init"}


@dataclass
class WeightFile:
    """One weight file or directory a preset needs, and where it was found (if anywhere)."""

    role: str
    path: str
    repo: str | None = None
    format: str | None = None
    optional: bool = False
    found: Path | None = None
    note: str | None = None  # shown by `rgba models` (e.g. "no public release: train it yourself")


@dataclass
class Preset:
    """A parsed preset: components (dicts straight from TOML) plus resolved weight files."""

    name: str
    source: Path
    description: str = ""
    backend: str = "wan-alpha"
    family: str = "wan"
    embedded: bool = False
    weights_folder: str | None = None  # embedded presets: folder under rgbacli/weights/ (default: name)
    variants: dict[str, str] = field(default_factory=dict)  # backend → preset with that backend
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[WeightFile]:
        """Every weight file the preset names, in a stable order (component, then adapters)."""
        out: list[WeightFile] = []
        for cname, comp in self.components.items():
            if "path" in comp:
                out.append(WeightFile(cname, comp["path"], comp.get("repo"), comp.get("format"),
                                      bool(comp.get("optional", False))))
            if "tokenizer" in comp:
                out.append(WeightFile(f"{cname}.tokenizer", comp["tokenizer"], comp.get("repo"),
                                      "tokenizer", bool(comp.get("optional", False))))
            for key, value in comp.items():
                if key.endswith("_file"):
                    entry = value if isinstance(value, dict) else {"path": value}
                    out.append(WeightFile(f"{cname}.{key[:-5]}", entry["path"], entry.get("repo"), key[:-5],
                                          bool(entry.get("optional", False))))
            for i, ad in enumerate(comp.get("adapters", [])):
                out.append(WeightFile(f"{cname}.{ad.get('kind', 'adapter')}[{i}]", ad["path"], ad.get("repo"),
                                      ad.get("kind"), bool(ad.get("optional", False)), note=ad.get("note")))
        return out


def shipped_presets() -> dict[str, Path]:
    """Name → path of every preset shipped with the package."""
    root = resources.files("rgbacli") / "_presets"
    return {Path(str(p)).stem: Path(str(p)) for p in root.iterdir() if str(p).endswith(".toml")}


def load_preset(name_or_path: str) -> Preset:
    """Parse a shipped preset by name or a user TOML by path; unknown names are a usage error."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise UsageError(f"preset file {path} does not exist")
    else:
        shipped = shipped_presets()
        if name_or_path not in shipped:
            raise UsageError(f"unknown preset '{name_or_path}' (known: {', '.join(sorted(shipped))}; "
                             "or pass a path to a .toml file)")
        path = shipped[name_or_path]
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"preset {path} is not valid TOML: {e}") from None
    return _parse(data, path)


# Top-level scalar keys and the tables that are not component sections; every other table is a
# component section (`[text_encoder]`, `[transformer]`, `[vae]`, `[image_encoder]`, …) whose name
# the engine checks against its registry (rgbacli/components.py).
PRESET_KEYS = {"name", "description", "backend", "family", "embedded", "weights_folder"}
RESERVED_TABLES = {"sampling", "variants"}


def _parse(data: dict, path: Path) -> Preset:
    """Validate the TOML structure so that typos fail early with the offending key named."""
    components = {}
    for key, value in data.items():
        if key in PRESET_KEYS or key in RESERVED_TABLES:
            continue
        if not isinstance(value, dict):
            raise UsageError(f"preset {path}: unknown key '{key}'")
        for ckey in value:
            if ckey not in COMPONENT_KEYS and ckey != "adapters" and not ckey.endswith("_file"):
                raise UsageError(f"preset {path}: unknown key '{key}.{ckey}'")
        components[key] = dict(value)
    sampling = dict(data.get("sampling", {}))
    for key, value in sampling.items():
        if key not in SAMPLING_KEYS:
            raise UsageError(f"preset {path}: unknown sampling key '{key}'")
        try:
            sampling[key] = SAMPLING_KEYS[key](value)
        except (TypeError, ValueError):
            raise UsageError(f"preset {path}: sampling.{key} has a bad value {value!r}") from None
    return Preset(
        name=str(data.get("name", path.stem)), source=path, description=str(data.get("description", "")),
        backend=str(data.get("backend", "wan-alpha")), family=str(data.get("family", "wan")),
        embedded=bool(data.get("embedded", False)), weights_folder=data.get("weights_folder"),
        variants=dict(data.get("variants", {})), components=components, sampling=sampling,
    )


def search_roots(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for weight files, in order: --weights-dir, then RGBA_WEIGHTS entries."""
    roots = []
    if weights_dir:
        roots.append(Path(weights_dir))
    for entry in os.environ.get("RGBA_WEIGHTS", "").split(os.pathsep):
        if entry.strip():
            roots.append(Path(entry.strip()))
    return roots


def hf_cache_dirs() -> list[Path]:
    """Snapshot folders of the local Hugging Face hub cache (read offline; nothing is downloaded)."""
    hub = os.environ.get("HF_HUB_CACHE")
    if not hub:
        home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        hub = str(Path(home) / "hub")
    return [Path(hub)]


def find_file(wf: WeightFile, preset: Preset, weights_dir=None) -> Path | None:
    """Locate one weight file. An explicit --weights-dir wins (so `rgba train` output can be tried
    without installing it); embedded presets then look in the package before RGBA_WEIGHTS."""
    rel = Path(wf.path)
    if rel.is_absolute():
        return rel if rel.exists() else None
    candidates = [Path(weights_dir) / rel] if weights_dir else []
    if preset.embedded:
        candidates.append(PACKAGE_WEIGHTS / (preset.weights_folder or preset.name) / rel)
    candidates += [root / rel for root in search_roots()]
    candidates.append(preset.source.parent / rel)
    for c in candidates:
        if c.exists():
            return c
    if wf.repo:
        for hub in hf_cache_dirs():
            snaps = hub / ("models--" + wf.repo.replace("/", "--")) / "snapshots"
            if snaps.is_dir():
                # "Repo-Name/sub" in a preset is "sub" inside that repo's snapshot.
                inner = Path(*rel.parts[1:]) if len(rel.parts) > 1 and rel.parts[0] == wf.repo.split("/")[-1] else rel
                for snap in sorted(snaps.iterdir(), reverse=True):
                    for cand in (snap / inner, snap / rel):
                        if cand.exists():
                            return cand
    return None


def resolve_files(preset: Preset, weights_dir=None) -> list[WeightFile]:
    """All weight files of the preset with `.found` filled in where they exist on this machine."""
    files = preset.files()
    for wf in files:
        wf.found = find_file(wf, preset, weights_dir)
    return files


def require(preset: Preset, role: str, weights_dir=None) -> Path | None:
    """The path of one required file, or a WeightsError naming it and every other missing file of
    its section (see check_files)."""
    files = resolve_files(preset, weights_dir)
    for wf in files:
        if wf.role == role:
            if wf.found is None and not wf.optional:
                section = role.split(".")[0]
                check_files(preset, weights_dir, [f for f in files if f.role.split(".")[0] == section])
            return wf.found
    return None


def weights_root(weights_dir=None) -> Path:
    """Where missing files should go: --weights-dir, else the first RGBA_WEIGHTS folder, else
    ~/rgba-weights (then to be named in RGBA_WEIGHTS)."""
    roots = search_roots(weights_dir)
    return roots[0] if roots else Path.home() / "rgba-weights"


def _in_repo(wf: WeightFile) -> str:
    """The file's path inside its repository ("Repo/sub" in a preset is "sub" inside Repo)."""
    parts = Path(wf.path).parts
    if len(parts) > 1 and wf.repo and parts[0] == wf.repo.split("/")[-1]:
        return str(Path(*parts[1:]))
    return wf.path


def download_commands(missing: list[WeightFile], weights_dir=None) -> list[str]:
    """One `huggingface-cli download REPO FILE… --local-dir DIR` line per repository, in the order
    the files were named; folders (diffusers components, tokenizers) are `--include 'dir/*'`."""
    import shlex

    root = weights_root(weights_dir)
    by_repo: dict[tuple[str, Path], list[str]] = {}
    for wf in missing:
        if not wf.repo or Path(wf.path).is_absolute():
            continue
        inner = _in_repo(wf)
        local = root / Path(wf.path).parts[0] if inner != wf.path else root
        by_repo.setdefault((wf.repo, local), []).append(inner)
    lines = []
    for (repo, local), names in by_repo.items():
        files = [n for n in names if Path(n).suffix]
        folders = [f"{n}/*" for n in names if not Path(n).suffix]
        args = ["huggingface-cli", "download", repo, *files]
        if folders:
            args += ["--include", *folders]
        lines.append(shlex.join(args + ["--local-dir", str(local)]))
    return lines


def check_files(preset: Preset, weights_dir=None, files: list[WeightFile] | None = None) -> None:
    """Every required file present, else one WeightsError that names each missing file with its
    repository and the folder it belongs in, then the download command per repository."""
    files = resolve_files(preset, weights_dir) if files is None else files
    missing = [f for f in files if f.found is None and not f.optional]
    if not missing:
        return
    root = weights_root(weights_dir)
    searched = ", ".join(str(r) for r in search_roots(weights_dir)) or "no --weights-dir or RGBA_WEIGHTS set"
    commands = download_commands(missing, weights_dir)
    if len(missing) == 1 and not commands:  # one file, nothing to download: one line
        wf = missing[0]
        raise WeightsError(f"preset '{preset.name}' needs {wf.path} for {wf.role}, not found (it belongs in "
                           f"{root / wf.path}; searched: {searched}; the Hugging Face cache)")
    lines = [f"preset '{preset.name}' is missing {len(missing)} of {len(files)} weight files "
             f"(searched: {searched}; the Hugging Face cache):"]
    for wf in missing:
        repo = f" from {wf.repo}" if wf.repo else ""
        lines.append(f"  {wf.role}: {wf.path}{repo} → {root / wf.path}")
    if commands:
        lines.append("to fetch them" + ("" if search_roots(weights_dir) else f" (then set RGBA_WEIGHTS={root})") + ":")
        lines += [f"  {c}" for c in commands]
    raise WeightsError("\n".join(lines))


def default_preset(weights_dir=None) -> str:
    """The first shipped real preset whose required files are all here, else the embedded 'tiny'."""
    for name in ("wan-alpha-14b", "wan-alpha-v2-14b", "wan-alpha-1.3b"):
        files = resolve_files(load_preset(name), weights_dir)
        if all(f.found is not None or f.optional for f in files):
            return name
    return "tiny"


def with_backend(preset: Preset, backend: str | None) -> Preset:
    """The preset itself, or the variant it names for another backend (`--backend`)."""
    if backend is None or backend == preset.backend:
        return preset
    if backend not in preset.variants:
        others = ", ".join(n for n in sorted(shipped_presets()) if load_preset(n).backend == backend) or "none shipped"
        raise UsageError(f"preset '{preset.name}' has no {backend} backend (presets with one: {others})")
    return load_preset(preset.variants[backend])
