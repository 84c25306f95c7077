"""A story → consistent RGBA panels (and clips): StoryDiffusion's consistent self-attention.

Steps: the story is parsed (story_text.py); each new character's identity panels are sampled
together with CSA writing its bank (rgbacli/models/consistent_attention.py); then every other
panel is sampled alone, reading the banks of the characters it names ([NC] panels: plain). The
sampling itself is the text-to-RGBA pipeline's (encode_prompt → prepare_latents → denoise →
decode), reused as it is; CSA reaches it through the DiT's attention context. Panel i's seed is
`seed + i`, so a panel is the same whether the story has 4 panels or 40.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import torch

from rgbacli.engine import Engine
from rgbacli.errors import UsageError
from rgbacli.models.attention import context_of
from rgbacli.models.consistent_attention import CSAConfig, IdentityBank, StoryState, attach_csa
from rgbacli.pipelines.guidance import GuidancePlan
from rgbacli.pipelines.params import GenerateParams
from rgbacli.pipelines.story_text import Panel, Story
from rgbacli.pipelines.schedulers import x0_coefficient
from rgbacli.pipelines.t2v import TextToRGBAPipeline

# The CSA settings `rgba story` uses (CSAConfig's fields); measured in docs/story.md.
DEFAULT_CSA: dict = {"sa": 0.5, "start": 0.5}  # from half-way: CSA from step 1 cost motion adherence
DEFAULT_ANCHOR: dict = {}  # grouped clip-wide statistics (per-frame pulls shifted hues: docs/story.md)

# Prompt templates ({prompt} is the panel's text) and negative prompts. The tiny model reads only
# its own vocabulary, so its styles are material words; the others are for real presets.
STYLES: dict[str, tuple[str, str]] = {
    "none": ("{prompt}", ""),
    "glass": ("glass {prompt}", ""),
    "neon": ("glowing {prompt}", ""),
    "ghostly": ("smoky {prompt}", ""),
    "comic": ("comic book panel, {prompt}, bold ink outlines, flat colours", "photograph, blurry, deformed"),
    "anime": ("anime style, {prompt}, clean cel shading", "photograph, realistic, deformed"),
    "painting": ("{prompt}, oil painting, visible brush strokes", "photograph, flat colours, text"),
    "cartoon-3d": ("{prompt}, 3D animated film character, soft studio light", "photograph, sketch, deformed"),
    "photo": ("cinematic photo of {prompt}, 35mm, shallow depth of field", "drawing, painting, cartoon"),
    "noir": ("black and white film noir still, {prompt}, hard shadows", "colour, cartoon, bright"),
    "line-art": ("line art drawing of {prompt}, clean lines, no shading", "colour fill, photograph, shading"),
}


def styled(prompt: str, style: str) -> tuple[str, str]:
    """(prompt, negative) of a panel under `style`; an unknown style is one UsageError line."""
    if style not in STYLES:
        raise UsageError(f"unknown style {style!r} (known: {', '.join(STYLES)})")
    template, negative = STYLES[style]
    return template.format(prompt=prompt), negative


@dataclass
class PanelResult:
    panel: Panel
    frames: torch.Tensor  # (T, H, W, 4) straight RGBA float32
    params: GenerateParams
    mode: str  # write (identity panel), read or plain


@dataclass
class StoryResult:
    panels: list[PanelResult]
    banks: dict[str, IdentityBank]
    timings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AnchorConfig:
    """The identity anchor: from `start` (a share of the steps) on, each panel's foreground latent
    statistics (per channel, over the latent cells its predicted alpha covers) are pulled toward
    its character's, by `strength` (1 = all the way). `match_std` matches spread as well as mean.
    The look is kept per frame group (:func:`frame_groups`): the causal VAE's first latent frame
    (one pixel frame) has other statistics than the later ones (four each), and pulling it to
    a clip-wide mean shifted colours (red → orange, docs/story.md)."""

    strength: float = 1.0
    start: float = 0.25
    match_std: bool = True
    threshold: float = 0.1  # alpha that counts as the subject
    per_frame: bool = False  # pull each latent frame to the look (else the clip's statistics as a whole)

    def to_json(self) -> dict:
        return asdict(self)


class StoryPipeline:
    """Samples a parsed story's panels on one engine, with CSA (or without: `csa=None`) and the
    identity anchor (or without: `anchor=None`)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.t2v = TextToRGBAPipeline(engine)

    def panel_params(self, panel: Panel, base: GenerateParams, style: str) -> GenerateParams:
        prompt, negative = styled(panel.prompt, style)
        return replace(base, prompt=prompt, negative=base.negative or negative, seed=base.seed + panel.index)

    def __call__(self, story: Story, base: GenerateParams, csa: CSAConfig | None, style: str = "none",
                 banks: dict[str, IdentityBank] | None = None, progress=None,
                 anchor: AnchorConfig | None = None, mask_every: int = 4) -> StoryResult:
        """`base` holds the sampling settings and the story seed; `banks` are characters loaded
        from a character file (their panels all read). `progress(done, total)` counts panels."""
        transformer = self.engine.backend.transformer
        plan = GuidancePlan.build(base.guidance, base.motion_guidance)
        state = StoryState(csa or CSAConfig(), dict(banks or {}))
        attachment = attach_csa(transformer, csa) if csa is not None else None
        results: dict[int, PanelResult] = {}
        total, t0 = len(story.panels), time.perf_counter()
        with self.engine.on_device(self.engine.component("text_encoder")) as te:
            te.encode(sorted({self.panel_params(p, base, style).prompt for p in story.panels}))  # words it cannot read: said once
        try:
            with context_of(transformer).use(story=state):
                for name in story.new_characters():
                    ids = story.identity_panels(name)
                    state.begin("write" if csa else "off", plan.num_passes, write_to=name, seed=base.seed + ids[0].index)
                    step = _StoryStep(self.engine, state, csa, anchor, None, mask_every)
                    params = [self.panel_params(p, base, style) for p in ids]
                    out = self.t2v.generate_batch(params, callback_on_step_end=step, warn=False)
                    bank = state.banks.setdefault(name, IdentityBank(name))
                    bank.description = story.characters[name].description
                    if step.final is not None:  # the character's look: its identity panels' mean statistics
                        bank.anchor = tuple(t.mean(0, keepdim=True) for t in step.final)
                    for p, q, r in zip(ids, params, out):
                        results[p.index] = PanelResult(p, r.frames, q, "write" if csa else "plain")
                        if progress:
                            progress(len(results), total)
                for p in story.panels:
                    if p.index in results:
                        continue
                    mode = "read" if (csa and p.characters) else "off"
                    state.begin(mode, plan.num_passes, read_from=p.characters, seed=base.seed + p.index)
                    target = state.banks[p.characters[0]].anchor if len(p.characters) == 1 else None
                    step = _StoryStep(self.engine, state, None, anchor if target is not None else None, target,
                                      mask_every)
                    q = self.panel_params(p, base, style)
                    frames = self.t2v.generate_batch([q], callback_on_step_end=step, warn=False)[0].frames
                    results[p.index] = PanelResult(p, frames, q, "read" if mode == "read" else "plain")
                    if progress:
                        progress(len(results), total)
        finally:
            state.begin("off", 1)
            if attachment is not None:
                attachment.remove()
        return StoryResult([results[i] for i in sorted(results)], state.banks,
                           {"seconds": time.perf_counter() - t0, "panels": total})


class _StoryStep:
    """The step callback of one story batch: decodes the predicted alpha where something needs the
    subject's mask (CSA's foreground bank, the identity anchor), every `mask_every` steps (the
    alpha decode costs more than a DiT step; in between the last mask stands), and applies the
    anchor. `target` (mean, std) is the character's look; None in a batch of identity panels,
    which are pulled toward their own mean."""

    def __init__(self, engine: Engine, state: StoryState, csa: CSAConfig | None, anchor: AnchorConfig | None,
                 target: tuple[torch.Tensor, torch.Tensor] | None, mask_every: int = 4):
        self.engine, self.state, self.csa, self.anchor, self.target = engine, state, csa, anchor, target
        self.mask_every = max(1, mask_every)
        self.grid: torch.Tensor | None = None  # (B, t, h, w) predicted alpha on the latent grid
        self.first_mask: int | None = None
        self.final: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, std) per sample at the last step

    def __call__(self, pipe, step: int, timestep, values: dict) -> dict:
        steps = len(pipe.scheduler.timesteps)
        foreground = self.csa is not None and self.csa.foreground
        anchoring = self.anchor is not None and step >= round(self.anchor.start * steps)
        if not anchoring and not foreground:
            return {}
        backend = self.engine.backend
        x0 = values["x0"]
        if self.first_mask is None:
            self.first_mask = step
        if self.grid is None or (step - self.first_mask) % self.mask_every == 0:
            with torch.no_grad():
                self.grid = alpha_grid(backend.decode_alpha(x0)[:, 0], backend.temporal_factor,
                                       backend.spatial_factor, x0.shape[2] // backend.copies)
            if foreground:
                tokens = torch.nn.functional.max_pool2d(self.grid, backend.patch_size) > 0.05
                self.state.set_foreground(tokens.flatten(1).repeat(1, backend.copies))
        if not anchoring:
            return {}
        mask = (self.grid > self.anchor.threshold).repeat(1, backend.copies, 1, 1)[:, None]  # (B, 1, T, h, w)
        groups, n = frame_groups(x0.shape[2], backend.copies), 2 * backend.copies  # (T,) each frame's group
        if step == steps - 1:
            self.final = look_stats(values["latents"], mask, groups, n)
        target_mean, target_std = self.target or [t.mean(0, keepdim=True) for t in look_stats(x0, mask, groups, n)]
        if target_mean.shape[-1] != n:
            raise UsageError(f"a character's look has {target_mean.shape[-1]} frame groups; this model's clips "
                             f"have {n} (a character file from another backend?)")
        if self.anchor.per_frame:
            mean, std = fg_stats(x0, mask, per_frame=True)  # (B, C, T)
        else:
            mean, std = (t[:, :, groups] for t in look_stats(x0, mask, groups, n))  # (B, C, T)
        mean, std = (t[..., None, None] for t in (mean, std))  # (B, C, T, 1, 1)
        target_mean, target_std = (t[:, :, groups, None, None] for t in (target_mean, target_std))  # (1, C, T, 1, 1)
        moved = x0 - mean + target_mean
        if self.anchor.match_std:
            moved = (x0 - mean) / std.clamp(min=1e-3) * target_std + target_mean
        gain = x0_coefficient(pipe.scheduler, step + 1)  # how much of x0 the next sample holds
        return {"latents": values["latents"] + self.anchor.strength * gain * (moved - x0) * mask}


def fg_stats(latents: torch.Tensor, mask: torch.Tensor, per_frame: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std (B, C) of the latent cells under `mask` (B, 1, T, h, w);
    (B, C, T) with `per_frame` (a frame without any such cell gets mean 0, std 0)."""
    dims = (3, 4) if per_frame else (2, 3, 4)
    w = mask.to(latents.dtype)
    n = w.sum(dims, keepdim=True).clamp(min=1)
    mean = (latents * w).sum(dims, keepdim=True) / n
    var = ((latents - mean) ** 2 * w).sum(dims, keepdim=True) / n
    std = var.sqrt()
    if per_frame:
        return mean[..., 0, 0], std[..., 0, 0]
    return mean.flatten(1), std.flatten(1)


def frame_groups(latent_frames: int, copies: int = 1) -> torch.Tensor:
    """(T,) long: the group of each latent frame, for the look the anchor keeps. Per copy (alpha
    tokens' [RGB ; alpha] halves differ), the first latent frame (pixel frame 0 alone in the causal
    VAE) is one group and the later frames another: groups 2·copy and 2·copy + 1."""
    t = latent_frames // copies
    local = torch.arange(latent_frames) % t
    return (torch.arange(latent_frames) // t) * 2 + (local > 0).long()


def look_stats(latents: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor,
               n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std (B, C, G) of the latent cells under `mask` (B, 1, T, h, w)
    in each of `n_groups` frame groups (`groups` (T,) from :func:`frame_groups`); a group without
    such cells (a still has no later frames) gets 0."""
    means, stds = [], []
    for g in range(n_groups):
        sel = groups == g
        m, s = fg_stats(latents[:, :, sel], mask[:, :, sel])
        means.append(m)
        stds.append(s)
    return torch.stack(means, -1), torch.stack(stds, -1)


def alpha_grid(alpha: torch.Tensor, temporal_factor: int, spatial_factor: int, latent_frames: int) -> torch.Tensor:
    """Alpha (B, T, H, W) max-pooled onto the latent grid (B, t, h, w): latent frame 0 is pixel frame
    0, each later one the `temporal_factor` pixel frames the causal VAE folds into it."""
    first, rest = alpha[:, :1], alpha[:, 1:]
    pad = (-rest.shape[1]) % temporal_factor
    if pad:
        rest = torch.cat([rest, rest[:, -1:].expand(-1, pad, -1, -1)], dim=1)
    frames = [first] + ([rest.unflatten(1, (-1, temporal_factor)).amax(2)] if rest.shape[1] else [])
    per_frame = torch.cat(frames, dim=1)[:, :latent_frames]
    return torch.nn.functional.max_pool2d(per_frame, spatial_factor)
