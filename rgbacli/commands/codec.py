"""`rgba encode` / `rgba decode`: RGBA media ↔ latents through the preset's RGBA VAE."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from rgbacli.commands._options import (BitDepthOpt, DeviceOpt, DtypeOpt, ForceOpt, JsonOpt, MatteOpt, PremultipliedOpt,
                                       PresetOpt, StartNumberOpt, WeightsDirOpt)
from rgbacli.console import info, print_json, progress, warn
from rgbacli.fsutil import atomic_output, check_output


def encode(
    source: Annotated[str, typer.Argument(help="RGBA media: .mov .webm .mkv .apng .webp .png, name.%04d.png, a folder.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Latents file (.safetensors).")],
    preset: PresetOpt = "tiny",
    fps: Annotated[Optional[float], typer.Option("--fps", help="Frame rate of an image-sequence input (folders, "
                   "name.%04d.png); videos keep their own.  \\[default: 24]")] = None,
    premultiplied: PremultipliedOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    weights_dir: WeightsDirOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Encode RGBA media to latents (frame counts that are not 4k+1 are padded, then trimmed on decode)."""
    from rgbacli.engine import Engine
    from rgbacli.errors import UsageError
    from rgbacli.media import read_clip
    from rgbacli.media.formats import is_sequence
    from rgbacli.pipelines.codec import encode_clip, save_latents

    if not output.endswith(".safetensors"):
        raise UsageError(f"latents output must end in .safetensors: {output}")
    check_output(output, force)
    t0 = time.perf_counter()
    clip = read_clip(source, premultiplied=premultiplied, fps=fps if is_sequence(source) else None)
    if not clip.had_alpha:
        warn(f"{source} has no alpha channel; encoding it as fully opaque")
    engine = Engine(preset, device=device, dtype=dtype, weights_dir=weights_dir)
    with progress() as bar:
        bar.add_task(f"encode {clip.n_frames} frames", total=None)
        z, meta = encode_clip(engine, clip)
    with atomic_output(output, force) as tmp:
        save_latents(tmp, z, meta)
    summary = {"output": output, "latent_shape": list(z.shape), "seconds": round(time.perf_counter() - t0, 3), **meta}
    if as_json:
        print_json(summary)
    else:
        info(f"wrote {output}: latents {tuple(z.shape)} from {meta['frames']} frames "
             f"{meta['width']}x{meta['height']} (preset {engine.preset.name})")


def decode(
    source: Annotated[str, typer.Argument(help="Latents file from `rgba encode` (.safetensors).")],
    output: Annotated[str, typer.Option("-o", "--output", help="RGBA media (.mov .webm .mkv .apng .webp name.%04d.png …).")],
    preset: PresetOpt = None,
    premultiplied: PremultipliedOpt = False,
    start_number: StartNumberOpt = None,
    bit_depth: BitDepthOpt = None,
    matte: MatteOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    weights_dir: WeightsDirOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Decode latents back to RGBA media with the RGB and alpha decoders.

    Without --preset: the preset recorded in the latents file."""
    from rgbacli.engine import Engine
    from rgbacli.media import Clip, matte_path, write_clip, write_matte
    from rgbacli.media.write import check_delivery, check_writable
    from rgbacli.pipelines.codec import check_latents, decode_latents, load_latents

    t0 = time.perf_counter()
    check_writable(output, force)
    check_delivery(output, bit_depth, start_number)
    matte_out = str(matte_path(output)) if matte else None
    if matte_out is not None:
        check_writable(matte_out, force)
    z, meta = load_latents(source)
    engine = Engine(preset or meta["preset"], device=device, dtype=dtype, weights_dir=weights_dir)
    check_latents(engine, z, meta)
    with progress() as bar:
        task = bar.add_task("decode", total=z.shape[2])
        frames = decode_latents(engine, z, meta, progress=lambda i, n: bar.update(task, completed=i))
    clip = Clip(frames, fps=float(meta["fps"]))
    path = write_clip(clip, output, force=force, premultiplied=premultiplied, bit_depth=bit_depth,
                      start_number=start_number)
    if matte_out is not None:
        write_matte(clip, matte_out, force=force, bit_depth=bit_depth, start_number=start_number)
    summary = {"output": str(path), "frames": frames.shape[0], "size": f"{frames.shape[2]}x{frames.shape[1]}",
               "fps": meta["fps"], "preset": engine.preset.name, "seconds": round(time.perf_counter() - t0, 3),
               **({"matte": matte_out} if matte_out else {})}
    if as_json:
        print_json(summary)
    else:
        info(f"wrote {path}: {frames.shape[0]} frames {summary['size']} (preset {engine.preset.name})")
