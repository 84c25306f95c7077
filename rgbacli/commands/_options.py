"""Options shared by several commands, declared once as `Annotated` aliases.

A command writes `device: DeviceOpt = "auto"`; the flag name and help live here, the default in
the command's signature (it differs between commands for a few options, e.g. --preset).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

PresetOpt = Annotated[Optional[str], typer.Option("--preset", help="Preset name or TOML path (`rgba models` lists them).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")]
OffloadOpt = Annotated[bool, typer.Option("--offload", help="Keep components on the CPU between uses (GPU).")]
WeightsDirOpt = Annotated[Optional[str], typer.Option("--weights-dir", help="Folder searched first for weight files.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]
PremultipliedOpt = Annotated[bool, typer.Option("--premultiplied", help="Media use premultiplied (associated) "
                                                "alpha, not straight: inputs are read and outputs written so.")]
# Delivery options of commands that write media (wired to rgbacli.media's writers).
StartNumberOpt = Annotated[Optional[int], typer.Option("--start-number", help="First frame number of an image-sequence "
                           "output (e.g. 1001).  \\[default: 1]")]
BitDepthOpt = Annotated[Optional[int], typer.Option("--bit-depth", help="Bits per channel of PNG/TIFF (8 or 16) and "
                        "EXR (16 half, 32 float) outputs.  \\[default: PNG 8, TIFF 16, EXR 16]")]
MatteOpt = Annotated[bool, typer.Option("--matte", help="Also write the alpha alone as a greyscale clip or "
                     "sequence beside the output (shot.mov → shot.matte.mov, shot.%04d.exr → shot.matte.%04d.exr).")]
InputFpsOpt = Annotated[Optional[float], typer.Option("--input-fps", help="Frame rate of image-sequence inputs "
                        "(folders, name.%04d.png); videos keep their own.  \\[default: 24]")]


# Batch executors (`--prompts` and the other batch forms): rgbacli/commands/_batch.py reads them.
ExecutorOpt = Annotated[str, typer.Option("--executor", help="Batch: local (this process) or ray (one loaded "
                                          "engine per Ray worker; needs pip install \"rgbacli[ray]\").")]
RayAddressOpt = Annotated[Optional[str], typer.Option("--ray-address", help="Batch on Ray: auto or HOST:PORT of "
                                                      "a running cluster (default: start a local one).")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help="Batch on Ray: workers, each with one "
                                                   "loaded engine (default: one per GPU, else 1).")]
GpusPerWorkerOpt = Annotated[Optional[float], typer.Option("--gpus-per-worker", help="Batch on Ray: GPUs per "
                                                           "worker (default: 1 when the cluster has GPUs, else 0).")]
MaxRetriesOpt = Annotated[int, typer.Option("--max-retries", help="Batch on Ray: times an item is retried on a "
                                            "new worker after its worker died.")]
