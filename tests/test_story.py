"""`rgba story`: the story syntax, consistent self-attention (write/read banks, sa = 0, guidance passes
kept apart), the identity anchor, pages, story.json, character files, CLI behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_wan, tiny_wan, tiny_wan_inputs, write_test_preset
from PIL import Image

from rgbacli.errors import UsageError
from rgbacli.media.pages import BORDER, PagePanel, character_sheet, classic_rows, grid_pages, make_pages
from rgbacli.models.attention import context_of
from rgbacli.models.consistent_attention import CSAConfig, StoryState, attach_csa
from rgbacli.pipelines.story_text import parse_story

STORY = """\
[Milo] a jellyfish
// a comment
[Milo] drifting up # Milo wakes up
[Milo] drifting left
[Bea] a glowing star
[Bea] drifting down
[Bea] drifting right

[Milo] drifting right near [Bea] # together
[NC] a smoky cloud # the weather turns
"""


# ----------------------------------------------------------------------------- syntax
def test_story_syntax():
    story = parse_story(STORY, id_length=2)
    assert list(story.characters) == ["Milo", "Bea"]
    assert [(p.index, p.line, p.characters) for p in story.panels] == [
        (0, 3, ("Milo",)), (1, 4, ("Milo",)), (2, 6, ("Bea",)), (3, 7, ("Bea",)), (4, 9, ("Milo", "Bea")), (5, 10, ())]
    assert story.panels[0].prompt == "a jellyfish drifting up" and story.panels[0].caption == "Milo wakes up"
    assert story.panels[1].caption == "Milo drifting left"  # no '#': the text, with names
    assert story.panels[4].prompt == "a jellyfish drifting right near a glowing star"
    assert story.panels[5].prompt == "a smoky cloud" and story.panels[5].caption == "the weather turns"
    assert [p.index for p in story.identity_panels("Bea")] == [2, 3]
    loaded = parse_story("[Kit] drifting up", id_length=3, known={"Kit": "an orb"})
    assert loaded.panels[0].prompt == "an orb drifting up" and loaded.new_characters() == []


@pytest.mark.parametrize("text,message", [
    ("[Milo] a jellyfish\n[Milo] up\n[Milo] left\n[Milo] waves at [Bea]", r"line 4: undefined character \[Bea\]"),
    ("[Milo] a jellyfish\n[Milo] up\n#only a caption\n[Milo] left", "line 3: the panel has no text"),
    ("[Milo] a jellyfish\n[Milo] up\n[NC] # rain\n[Milo] left", "line 3: the panel has no text"),
    ("[Milo] a jellyfish\n[Milo] up\n[NC] a cloud\n[Milo] left", r"line 3: \[NC\] panel among the first 2 panels of \[Milo\]"),
    ("[Milo] a jellyfish\n[Milo] up", r"\[Milo\] \(line 1\) has 1 panel\(s\) of its own, --id-length 2 needs 2"),
    ("// nothing\n\n", "has no panels"),
    ("[Milo]\n[Milo] up", r"line 1: character \[Milo\] has no description"),
    ("[Milo] a jellyfish\n[Milo] up [NC]\n[Milo] left", r"line 2: \[NC\] \(no character\) together with \[Milo\]"),
])
def test_story_errors_name_the_line(text, message):
    with pytest.raises(UsageError, match=message):
        parse_story(text, id_length=2)


# ----------------------------------------------------------------------------- CSA
def _csa_run(model, state, mode, x, t, ctx, passes, **kw):
    state.begin(mode, passes, **kw)
    with context_of(model).use(story=state, step=1):
        return run_wan(model, x, t, ctx)


def test_bank_write_and_read_shapes_and_sa_zero_is_plain():
    model = tiny_wan()
    x, t, ctx = tiny_wan_inputs(b=4, frames=3)  # 2 identity panels × 2 guidance passes
    plain = run_wan(model, x, t, ctx)
    attachment = attach_csa(model, CSAConfig(sa=0.5))
    state = StoryState(CSAConfig(sa=0.5), {})
    written = _csa_run(model, state, "write", x, t, ctx, passes=2, write_to="Milo", seed=3)
    bank = state.banks["Milo"]
    assert sorted(bank.entries) == [(0, 1), (1, 1)]  # (block, step) for both blocks
    k, v = bank.entries[(0, 1)]
    n = bank.tokens()
    assert k.shape == v.shape == (2, n, 2, 8) and 0 < n < 2 * 3 * 4  # (passes, drawn tokens, heads, dim)
    assert (written - plain).abs().max() > 1e-4
    read = _csa_run(model, state, "read", x[:2], t[:2], ctx[:2], passes=2, read_from=("Milo",))
    assert (read - run_wan(model, x[:2], t[:2], ctx[:2])).abs().max() > 1e-4  # the bank changed the panel
    assert torch.equal(_csa_run(model, state, "write", x, t, ctx, passes=2, write_to="Milo", seed=3), written)

    zero = StoryState(CSAConfig(sa=0.0), {})
    attachment.remove()
    attachment = attach_csa(model, zero.config)
    assert torch.equal(_csa_run(model, zero, "write", x, t, ctx, passes=2, write_to="Kit"), plain)
    assert zero.banks["Kit"].tokens() == 0
    plain_two = run_wan(model, x[:2], t[:2], ctx[:2])
    assert torch.equal(_csa_run(model, zero, "read", x[:2], t[:2], ctx[:2], passes=2, read_from=("Kit",)), plain_two)
    state.begin("off", 2)
    with context_of(model).use(story=state, step=0):  # step 0: plain attention (the reference schedule)
        assert torch.equal(run_wan(model, x, t, ctx), plain)
    attachment.remove()


@pytest.mark.parametrize("alpha_half,tokens", [(True, 2 * 16), (False, 2 * 8)])
def test_cogvideox_bank_holds_video_tokens_only(alpha_half, tokens):
    """On CogVideoX's joint sequence [text | RGB video | alpha video] the bank takes video tokens
    only (never the 3 text rows), the RGB half alone without alpha_half: sa = 1 draws all of them
    for 2 panels × 2 latent frames × 4 tokens (× 2 halves)."""
    from diffusers import CogVideoXTransformer3DModel

    from rgbacli.models.alpha_tokens import AlphaTokenTransformer

    torch.manual_seed(5)
    model = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                                        time_embed_dim=8, text_embed_dim=16, num_layers=2, sample_width=4,
                                        sample_height=4, sample_frames=5, patch_size=2, max_text_seq_length=3,
                                        use_rotary_positional_embeddings=True).eval()
    wrapped = AlphaTokenTransformer(model, rank=2, lora_alpha=2.0)
    config = CSAConfig(sa=1.0, alpha_half=alpha_half)
    attach_csa(model, config)
    state = StoryState(config, {})
    state.begin("write", 1, write_to="Milo", seed=0)
    x, text, t = torch.randn(2, 4, 4, 4, 4), torch.randn(2, 3, 16), torch.full((2,), 300.0)
    rope = tuple(torch.cat([r, r]) for r in wrapped.rgb_rotary(2, 4, 4, "cpu"))
    with torch.no_grad(), context_of(model).use(story=state, step=1):
        model(x.transpose(1, 2), text, t, image_rotary_emb=rope, return_dict=False)
    k, v = state.banks["Milo"].entries[(0, 1)]
    assert k.shape == v.shape == (1, tokens, 2, 16)  # (passes, drawn tokens, heads, dim)


def test_csa_starts_after_its_share_of_the_steps():
    """`start` is a share of the run's steps (the default story CSA starts half-way: layout and
    motion form in the early steps); `start_step` stays a floor."""
    assert CSAConfig(start=0.5).first_step(16) == 8 and CSAConfig(start=0.5).first_step(50) == 25
    assert CSAConfig().first_step(16) == 1 and CSAConfig(start=0.02, start_step=3).first_step(16) == 3
    with pytest.raises(ValueError, match="share of the steps"):
        CSAConfig(start=1.5)


def test_guidance_passes_never_mix():
    """Batch [a, b | a', b'] (pass-major): changing pass 1's b' leaves pass 0 untouched, while
    changing b (same pass) does move a."""
    model = tiny_wan()
    x, t, ctx = tiny_wan_inputs(b=4, frames=2)
    attach_csa(model, CSAConfig(sa=1.0))
    state = StoryState(CSAConfig(sa=1.0), {})
    base = _csa_run(model, state, "write", x, t, ctx, passes=2, write_to="M")
    other_pass = x.clone()
    other_pass[3] += 2.0
    moved = _csa_run(model, state, "write", other_pass, t, ctx, passes=2, write_to="M")
    torch.testing.assert_close(moved[:2], base[:2], atol=0, rtol=0)
    same_pass = x.clone()
    same_pass[1] += 2.0
    assert (_csa_run(model, state, "write", same_pass, t, ctx, passes=2, write_to="M")[0] - base[0]).abs().max() > 1e-4


# ----------------------------------------------------------------------------- pages
def test_page_layouts_and_sheets():
    h, w = 64, 96
    panels = [PagePanel(np.full((h, w, 4), (i * 40, 0, 0, 255), np.uint8), f"panel {i}") for i in range(5)]
    pages = grid_pages(panels, (255, 255, 255, 255))
    assert len(pages) == 2 and pages[0].shape == (2 * h + 3 * BORDER, 2 * w + 3 * BORDER, 4)
    assert (pages[1][BORDER + h + BORDER:, :, :3] == 255).all()  # the last page's empty cells show the background
    assert tuple(pages[0][BORDER + 1, BORDER + 1]) == (0, 0, 0, 255)  # panel 0's top-left pixel
    foot = pages[0][BORDER + h - 3, BORDER + 1]
    assert foot[0] > 150 and foot[3] == 255  # the caption box: semi-opaque white over the panel's foot
    for n in (1, 4, 7, 13):
        rows = classic_rows(n, seed=n)
        assert sum(sum(r) for r in rows) == n and all(set(r) <= {1, 2} for r in rows)
    classic = make_pages(panels, "classic", (0, 0, 0, 0), seed=1)
    assert classic and classic[0].shape[1] == 4 * w + 5 * BORDER
    assert make_pages(panels, "none", (0, 0, 0, 255)) == []
    sheet = character_sheet([p.image for p in panels[:3]])
    assert sheet.shape == (h, 3 * w + 2 * BORDER, 4) and (sheet[:, w:w + BORDER, 3] == 0).all()


# ----------------------------------------------------------------------------- the command
def _story_file(tmp_path, text=STORY):
    path = tmp_path / "story.txt"
    path.write_text(text)
    return path


def test_cli_story_outputs_json_and_determinism(cli, tmp_path):
    preset = write_test_preset(tmp_path)
    story = _story_file(tmp_path)
    r = cli("story", story, "-o", tmp_path / "out", "--preset", preset, "--seed", "4", "--layout", "classic",
            "--json", "--save-characters", tmp_path / "cast.safetensors")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["panels"] == 6 and summary["characters"] == ["Milo", "Bea"] and summary["pages"] >= 1
    out = tmp_path / "out"
    doc = json.loads((out / "story.json").read_text())
    assert [p["index"] for p in doc["panels"]] == list(range(6))
    assert [p["seed"] for p in doc["panels"]] == [4, 5, 6, 7, 8, 9]
    assert [p["mode"] for p in doc["panels"]] == ["write", "write", "write", "write", "read", "plain"]
    assert doc["panels"][0]["caption"] == "Milo wakes up" and doc["panels"][4]["characters"] == ["Milo", "Bea"]
    for p in doc["panels"]:  # relative paths that exist: a still and, with 5 frames, a clip
        assert (out / p["image"]).is_file() and (out / p["clip"]).is_file()
        assert Image.open(out / p["image"]).size == (16, 16)
    assert [c["sheet"] for c in doc["characters"]] == ["characters/Milo.png", "characters/Bea.png"]
    assert Image.open(out / "characters/Milo.png").size == (2 * 16 + BORDER, 16)
    assert all((out / page).is_file() for page in doc["pages"])
    first = {p: (out / p).read_bytes() for p in ("panels/004.png", "characters/Milo.png", doc["pages"][0])}
    r = cli("story", story, "-o", tmp_path / "out", "--preset", preset, "--seed", "4", "--layout", "classic")
    assert r.returncode == 1 and "--force" in r.stderr and (out / "story.json").exists()  # never clobbered
    r = cli("story", story, "-o", tmp_path / "out", "--preset", preset, "--seed", "4", "--layout", "classic", "--force")
    assert r.returncode == 0, r.stderr
    assert {p: (out / p).read_bytes() for p in first} == first  # same seed → same bytes

    # The saved cast comes back: a panel read against the saved banks equals the original one.
    again = _story_file(tmp_path, "[Milo] drifting right near [Bea] # together\n")
    r = cli("story", again, "-o", tmp_path / "again", "--preset", preset, "--seed", "8", "--characters",
            tmp_path / "cast.safetensors", "--layout", "none")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "again/panels/000.png").read_bytes() == first["panels/004.png"]
    assert (tmp_path / "again/characters/Milo.png").read_bytes() == first["characters/Milo.png"]
    plain = cli("story", again, "-o", tmp_path / "plain", "--preset", preset, "--seed", "8", "--characters",
                tmp_path / "cast.safetensors", "--layout", "none", "--no-csa", "--no-anchor")
    assert plain.returncode == 0, plain.stderr
    assert (tmp_path / "plain/panels/000.png").read_bytes() != first["panels/004.png"]  # the bank is what did it


@pytest.mark.parametrize("args,code,needle", [
    (["--style", "vaporwave"], 2, "unknown style 'vaporwave'"),
    (["--layout", "manga"], 2, "unknown layout 'manga'"),
    (["--sa", "1.5"], 2, "sa must be in [0, 1]"),
    (["--animate", "--animate-frames", "2"], 2, "--animate-frames must be at least 3"),
    (["--animate-frames", "5"], 2, "--animate-frames sets the transitions of --animate"),
    (["--csa-start", "2"], 2, "--csa-start: start must be a share of the steps in [0, 1], not 2.0"),
    (["--no-csa", "--csa-start", "0.2"], 2, "--csa-start sets consistent self-attention, which --no-csa turns off"),
    (["--frames", "0"], 2, "--frames must be at least 1"),
    (["--background", "nope.png"], 2, "neither a colour nor an image"),
    (["--characters", "missing.safetensors"], 1, "missing.safetensors"),
])
def test_cli_story_bad_options_are_one_line_and_write_nothing(cli, tmp_path, args, code, needle):
    preset = write_test_preset(tmp_path)
    r = cli("story", _story_file(tmp_path), "-o", tmp_path / "out", "--preset", preset, *args, cwd=tmp_path)
    assert r.returncode == code, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_cli_story_animate_joins_the_panels_with_transitions(cli, tmp_path):
    """--animate: one clip of every panel's frames, in order, with the inner frames of an
    interpolate transition (5 frames: 3 inner) between consecutive panels; story.json says where
    each panel starts. Lossless clips (mkv), so the panel parts compare exactly."""
    from rgbacli.media import read_clip

    preset = write_test_preset(tmp_path)
    story = _story_file(tmp_path, "")
    story.write_text("[Milo] a jellyfish\n[Milo] drifting up\n[Milo] drifting left\n[Milo] drifting right\n")
    r = cli("story", story, "-o", tmp_path / "out", "--preset", preset, "--layout", "none", "--clip-format", "mkv",
            "--animate", "--animate-frames", "5", "--json")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    doc = json.loads((out / "story.json").read_text())
    anim = doc["animation"]
    assert anim == {"clip": "story.mkv", "frames": 3 * 5 + 2 * 3, "transition_frames": 5, "panel_starts": [0, 8, 16]}
    joined = read_clip(out / "story.mkv").frames
    assert joined.shape == (21, 16, 16, 4) and json.loads(r.stdout)["animation_frames"] == 21
    for start, p in zip(anim["panel_starts"], doc["panels"]):
        assert np.array_equal(joined[start:start + 5], read_clip(out / p["clip"]).frames)
    assert not np.array_equal(joined[5:8], np.repeat(joined[4:5], 3, axis=0))  # a transition, not a hold


def test_cli_story_syntax_error_names_the_file_line(cli, tmp_path):
    preset = write_test_preset(tmp_path)
    r = cli("story", "-", "-o", tmp_path / "out", "--preset", preset, input="[Milo] a jellyfish\n[Milo] up\n[Milo] left\n[Bea] a star\n[Milo] right\n")
    assert r.returncode == 2 and "story (stdin): [Bea] (line 4) has 0 panel(s)" in r.stderr
    assert not (tmp_path / "out").exists()


def test_identity_anchor_pulls_a_panel_toward_its_character(tiny_preset):
    """A read panel's final foreground latent statistics end at its character's look with the anchor
    (strength 1) and away from it without (strength 0: the same run, nothing pulled)."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.params import params_from_sampling
    from rgbacli.pipelines.story import AnchorConfig, StoryPipeline, alpha_grid, frame_groups, look_stats

    engine = Engine(str(tiny_preset), device="cpu")
    be = engine.backend
    story = parse_story("[Kit] an orb\n[Kit] drifting up\n[Kit] drifting left\n[Kit] drifting right", 2)
    base = params_from_sampling(engine.preset.sampling, "", seed=1, steps=4)
    pipe = StoryPipeline(engine)
    finals, denoise = [], pipe.t2v.denoise
    pipe.t2v.denoise = lambda *a, **kw: finals.append(denoise(*a, **kw)) or finals[-1]  # keep each batch's latents
    distance = {}
    for strength in (0.0, 1.0):
        finals.clear()
        look = pipe(story, base, None, anchor=AnchorConfig(strength=strength, start=0.0, threshold=0.0)).banks["Kit"].anchor
        z = finals[-1]  # the read panel
        grid = alpha_grid(be.decode_alpha(z)[:, 0], be.temporal_factor, be.spatial_factor, z.shape[2])
        mean, std = look_stats(z, (grid > 0.0)[:, None], frame_groups(z.shape[2]), 2)
        assert look[0].shape == (1, z.shape[1], 2)  # the first latent frame and the later ones
        distance[strength] = float((mean - look[0]).abs().mean() + (std - look[1]).abs().mean())
    assert distance[1.0] < 1e-3 < distance[0.0]


def test_default_anchor_keeps_the_first_latent_frame_its_own_look():
    """The causal VAE's first latent frame (pixel frame 0 alone) has other statistics than the later
    ones. The default anchor keeps one look per frame group, so a panel that already has its
    character's look is left exactly as it is; pulling every frame to one clip-wide look (the old
    per-frame default) moved it, and shifted a red character's hue to orange (docs/story.md)."""
    from types import SimpleNamespace

    from rgbacli.engine import Engine
    from rgbacli.models.consistent_attention import StoryState
    from rgbacli.pipelines.schedulers import make_scheduler
    from rgbacli.pipelines.story import DEFAULT_ANCHOR, AnchorConfig, _StoryStep, frame_groups

    engine = Engine("tiny", device="cpu")
    assert frame_groups(5).tolist() == [0, 1, 1, 1, 1] and frame_groups(6, 2).tolist() == [0, 1, 1, 2, 3, 3]
    scheduler = make_scheduler("unipc", 5.0)
    scheduler.set_timesteps(4)
    pipe = SimpleNamespace(scheduler=scheduler)
    z = torch.randn(1, 8, 5, 8, 8, generator=torch.Generator().manual_seed(0))  # the tiny latent (B, C, t, h, w)
    z[:, :, 0] += 1.5  # the first latent frame's own statistics
    z[:, :, 1:] += torch.linspace(-0.5, 0.5, 4).view(1, 1, 4, 1, 1)  # later frames that vary a little
    moved = {}
    for name, cfg in (("default", DEFAULT_ANCHOR), ("per-frame", {"per_frame": True})):
        step = _StoryStep(engine, StoryState(CSAConfig(), {}), None, AnchorConfig(**{**cfg, "start": 0.0, "threshold": -1.0}),
                          None)  # no target: the panel is pulled toward its own look
        out = step(pipe, 1, None, {"x0": z, "latents": z.clone()})
        moved[name] = float((out["latents"] - z).abs().max())
    assert moved["default"] < 1e-5 < 0.1 < moved["per-frame"]


def test_story_runs_on_the_alpha_token_backend():
    """Write and read on the alpha-token backend (doubled frames): the bank changes the read panel."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.params import params_from_sampling
    from rgbacli.pipelines.story import StoryPipeline

    engine = Engine("tiny-alpha-tokens", device="cpu")  # the shipped one: its alpha-token adapter file
    story = parse_story("[Kit] an orb\n[Kit] drifting up\n[Kit] drifting left\n[Kit] drifting right", 2)
    base = params_from_sampling(engine.preset.sampling, "", seed=1, frames=5, steps=3)
    with_csa = StoryPipeline(engine)(story, base, CSAConfig(sa=1.0))
    plain = StoryPipeline(engine)(story, base, None)
    assert with_csa.banks["Kit"].tokens() > 0
    assert [r.frames.shape for r in with_csa.panels] == [(5, 64, 64, 4)] * 3
    assert (with_csa.panels[2].frames - plain.panels[2].frames).abs().max() > 1e-4


@pytest.mark.parametrize("bad", ["Milo/kv/0/1/kv", "Milo/kv/0/1/", "Milo/anchor/mode"])
def test_character_file_with_a_foreign_key_is_one_error(tmp_path, bad):
    import json as _json

    from rgbacli.errors import WeightsError
    from rgbacli.models.consistent_attention import BANK_FORMAT, load_banks
    from rgbacli.weights.io import save_safetensors

    chars = {"Milo": {"description": "a jellyfish", "meta": {}, "images": 0}}
    path = save_safetensors({bad: torch.zeros(1, 2, 2, 4)}, tmp_path / "cast.safetensors",
                            metadata={"format": BANK_FORMAT, "characters": _json.dumps(chars)})
    with pytest.raises(WeightsError, match="unexpected key"):
        load_banks(path)
