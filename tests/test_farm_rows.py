"""Issue #17's table, row by row, through the CLI (rows 1-3 and 7 are in test_batch_farm.py).

Each case runs `rgba ...` in process (`rgbacli.cli.main`), so one import of torch serves them all;
the signal cases use a real subprocess and a real signal. No case may end in exit 3.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import disk_full_after

from rgbacli.cli import main
from rgbacli.media import Clip, read_clip, write_clip
from rgbacli.media.samples import varied_alpha_frames

SMALL = ["--preset", "tiny", "--frames", "1", "--steps", "1", "--size", "16x16"]


def rgba(argv, capsys) -> tuple[int, str, str]:
    """Run `rgba ARGV` in process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    code = e.value.code if isinstance(e.value.code, int) else (0 if e.value.code is None else 1)
    assert code != 3 and "internal error" not in err and "Traceback" not in err, err
    return code, out, err


def error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if "warning" not in ln]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RGBA_WEIGHTS", "")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))


# --- row 4: every numeric option against the preset's real limits --------------------------------
ROW4 = [
    (["--frames", "33"], "--frames 33: preset 'tiny' allows 1 to 31 frames (its position table holds 16 latent "
                         "frames; frames = 2k+1)"),
    (["--size", "256x256"], "--size 256x256: preset 'tiny' allows at most 128x128 (its position table holds 8x8 "
                            "tokens of 16x16 pixels)"),
    (["--size", "72x64"], "--size 72x64: preset 'tiny' needs width and height in multiples of 16"),
    (["--size", "0x64"], "--size 0x64: width and height must be whole numbers from 1 to 65536"),
    (["--frames", "100000"], "--frames 100000: preset 'tiny' allows 1 to 31 frames"),
    (["--frames", "0"], "--frames must be a whole number from 1 to 100000, not 0"),
    (["--steps", "0"], "--steps must be a whole number from 1 to 10000, not 0"),
    (["--steps", "-3"], "--steps must be a whole number from 1 to 10000, not -3"),
    (["--seed", "99999999999999999999"], "--seed must be a whole number 0 to 2**63-1, not 99999999999999999999"),
    (["--seed", "-1"], "--seed must be a whole number 0 to 2**63-1, not -1"),
    (["--guidance", "-1"], "--guidance must be a finite number ≥ 0, not -1.0"),
    (["--guidance", "nan"], "--guidance must be a finite number ≥ 0, not nan"),
    (["--fps", "0"], "--fps must be a positive number, not 0.0"),
    (["--motion-guidance", "inf"], "--motion-guidance must be a finite number ≥ 0, not inf"),
]


@pytest.mark.parametrize("flags,message", ROW4, ids=[" ".join(f) for f, _ in ROW4])
def test_row4_limits_are_usage_errors(flags, message, capsys, tmp_path):
    code, _, err = rgba(["generate", "a red orb", "--preset", "tiny", "-o", "x.apng", *flags], capsys)
    assert code == 2 and error_line(err).startswith(f"rgba: error: {message}"), err
    assert os.listdir(tmp_path) == []


def test_row4_empty_prompt_and_batch_flags(capsys, tmp_path):
    code, _, err = rgba(["generate", "  ", "--preset", "tiny", "-o", "x.apng"], capsys)
    assert code == 2 and "the prompt is empty" in error_line(err)
    Path("p.txt").write_text("a red orb\n")
    code, _, err = rgba(["generate", "--prompts", "p.txt", "-o", "out/{index}.apng", "--preset", "tiny",
                         "--frames", "33"], capsys)
    assert code == 2 and "--frames 33: preset 'tiny' allows 1 to 31 frames" in error_line(err)
    assert not Path("out").exists()  # refused before any work


def test_row4_the_limits_are_real(capsys):
    """The largest values the limits allow do run (31 frames; 128x128)."""
    from rgbacli.engine import Engine
    from rgbacli.pipelines.t2v import TextToRGBAPipeline, params_from_preset

    pipe = TextToRGBAPipeline(Engine("tiny", device="cpu"))
    assert pipe(params_from_preset(pipe.engine, "a red orb", frames=31, steps=1, width=16, height=16)).frames.shape[0] == 31
    assert pipe(params_from_preset(pipe.engine, "a red orb", frames=1, steps=1, width=128, height=128)).frames.shape[1:3] == (128, 128)


# --- rows 5 and 6: signals remove temporary files; an output that is an input -------------------
def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", RGBA_WEIGHTS="")
    env.pop("RGBA_DEBUG", None)
    return env


SIGNAL_CASES = {
    # command, what to wait for before the signal ("tmp": a temporary output exists)
    "composite": (["composite", "fg.mkv", "--over", "black", "--size", "1920x1080", "--fit", "loop", "--enter", "0",
                   "-o", "out/shot.mov"], "tmp"),
    "generate": (["generate", "a red orb", "--preset", "tiny", "--frames", "31", "--size", "128x128",
                  "--steps", "2", "-o", "out/o.%04d.png"], "tmp"),
    "decode": (["decode", "z.safetensors", "-o", "out/back.%04d.png", "--bit-depth", "16"], "tmp"),
    "encode": (["encode", "big.mkv", "-o", "out/z.safetensors"], 3.0),
    "train": (["train", "base-vae", "--out", "out/run", "--minutes", "5", "--threads", "1"], "out/run"),
    "story": (["story", "story.txt", "-o", "out/milo", "--steps", "8", "--frames", "1"], "tmp"),
}


@pytest.fixture(scope="module")
def signal_media(tmp_path_factory):
    d = tmp_path_factory.mktemp("signals")
    fg = varied_alpha_frames(4, 96, 128)
    write_clip(Clip(np.concatenate([fg] * 60), 24), d / "fg.mkv")  # 240 frames
    write_clip(Clip(np.concatenate([varied_alpha_frames(4, 64, 64)] * 8), 24), d / "big.mkv")
    from rgbacli.engine import Engine
    from rgbacli.pipelines.codec import encode_clip, save_latents

    z, meta = encode_clip(Engine("tiny", device="cpu"), read_clip(d / "big.mkv"))
    save_latents(d / "z.safetensors", z, meta)
    return d


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("command", list(SIGNAL_CASES))
def test_row5_signals_remove_temporary_files(command, sig, signal_media, tmp_path):
    if command != "composite" and sig == signal.SIGINT:
        pytest.skip("SIGINT takes the same path as SIGTERM; once (composite) is enough")
    for name in ("fg.mkv", "big.mkv", "z.safetensors"):
        os.symlink(signal_media / name, tmp_path / name)
    (tmp_path / "story.txt").write_text("[Milo] a jellyfish\n[Milo] drifting up\n[Milo] drifting left\n"
                                        "[Milo] drifting right\n")
    (tmp_path / "out").mkdir()
    argv, wait_for = SIGNAL_CASES[command]
    proc = subprocess.Popen([sys.executable, "-m", "rgbacli", *argv], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        started = None
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{command} never reached {wait_for}"
            if wait_for == "tmp":
                if any(".tmp-" in p.name for p in (tmp_path / "out").iterdir()):
                    break
            elif isinstance(wait_for, str):
                if (tmp_path / wait_for).exists():
                    time.sleep(1.0)
                    break
            else:  # the interpreter has started the command
                started = started or time.monotonic()
                if time.monotonic() - started > wait_for:
                    break
            time.sleep(0.005)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    left = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert left == []
    if command in ("composite", "generate", "decode", "encode", "story"):
        assert list((tmp_path / "out").iterdir()) == []  # no partial output either


def test_row6_an_output_that_is_an_input_is_refused(capsys, tmp_path):
    write_clip(Clip(varied_alpha_frames(2, 16, 16), 24), "good.mov")
    before = Path("good.mov").read_bytes()
    code, _, err = rgba(["composite", "good.mov", "--over", "black", "-o", "good.mov", "--force"], capsys)
    assert code == 2 and "the output good.mov is the input good.mov" in error_line(err)
    assert Path("good.mov").read_bytes() == before
    write_clip(Clip(varied_alpha_frames(2, 16, 16), 24), "bg.mov")
    code, _, err = rgba(["composite", "good.mov", "--over", "./bg.mov", "-o", "bg.mov", "--force"], capsys)
    assert code == 2 and "is the input ./bg.mov" in err
    write_clip(Clip(varied_alpha_frames(2, 16, 16), 24), "frames")
    code, _, err = rgba(["composite", "frames", "--over", "black", "-o", "frames/x.%04d.png"], capsys)
    assert code == 2 and "is inside the input frames" in err


# --- row 8: missing weights, `rgba models` ------------------------------------------------------
def test_row8_every_missing_file_and_the_download_commands(capsys, tmp_path):
    code, _, err = rgba(["generate", "a jellyfish", "--preset", "wan-alpha-14b", "--weights-dir", "w"], capsys)
    assert code == 1
    assert "preset 'wan-alpha-14b' is missing 7 of 8 weight files" in err
    for role, path, repo in [("text_encoder", "Wan2.1-T2V-14B-Diffusers/text_encoder", "Wan-AI/Wan2.1-T2V-14B-Diffusers"),
                             ("text_encoder.tokenizer", "Wan2.1-T2V-14B-Diffusers/tokenizer", "Wan-AI/Wan2.1-T2V-14B-Diffusers"),
                             ("transformer", "Wan2.1-T2V-14B-Diffusers/transformer", "Wan-AI/Wan2.1-T2V-14B-Diffusers"),
                             ("transformer.dora[0]", "epoch-13-1500.safetensors", "htdong/Wan-Alpha"),
                             ("transformer.lora[1]", "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors",
                              "Kijai/WanVideo_comfy"),
                             ("vae", "Wan2.1-T2V-14B-Diffusers/vae", "Wan-AI/Wan2.1-T2V-14B-Diffusers"),
                             ("vae.decoder_lora", "decoder.bin", "htdong/Wan-Alpha")]:
        assert f"  {role}: {path} from {repo} → w/{path}\n" in err
    assert "Wan-Alpha-VAE.bin" not in err  # optional
    commands = [ln.strip() for ln in err.splitlines() if ln.strip().startswith("huggingface-cli download")]
    assert commands == [
        "huggingface-cli download Wan-AI/Wan2.1-T2V-14B-Diffusers --include 'text_encoder/*' 'tokenizer/*' "
        "'transformer/*' 'vae/*' --local-dir w/Wan2.1-T2V-14B-Diffusers",
        "huggingface-cli download htdong/Wan-Alpha epoch-13-1500.safetensors decoder.bin --local-dir w",
        "huggingface-cli download Kijai/WanVideo_comfy lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors "
        "--local-dir w",
    ]


def test_row8_models_wraps_when_piped_and_has_json(tmp_path):
    env = dict(_env(), HF_HUB_CACHE=str(tmp_path / "no-hub"), COLUMNS="")
    env.pop("COLUMNS")
    r = subprocess.run([sys.executable, "-m", "rgbacli", "models", "wan-alpha-14b"], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout and "missing" in r.stdout
    flat = "".join(ln.split("│")[2].strip() for ln in r.stdout.splitlines() if ln.count("│") == 4)
    assert "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors" in flat  # folded, whole
    assert "huggingface-cli download htdong/Wan-Alpha epoch-13-1500.safetensors decoder.bin --local-dir" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rgbacli", "models", "wan-alpha-14b", "--json"], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    (entry,) = json.loads(r.stdout)["presets"]
    assert len(entry["download"]) == 3
    belongs = {f["file"]: f["belongs_in"] for f in entry["files"]}
    assert belongs["decoder.bin"].endswith("rgba-weights/decoder.bin")


# --- row 9 --------------------------------------------------------------------------------------
def test_row9_encode_and_decode_on_alpha_tokens(capsys):
    frames = varied_alpha_frames(5, 32, 32)
    write_clip(Clip(frames, 12), "in.mkv")
    code, out, err = rgba(["encode", "in.mkv", "-o", "z.safetensors", "--preset", "tiny-alpha-tokens", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["latent_shape"] == [1, 8, 6, 8, 8]  # [RGB ; alpha]: 3 latent frames twice
    code, out, err = rgba(["decode", "z.safetensors", "-o", "back.mkv", "--json"], capsys)
    assert code == 0, err
    back = read_clip("back.mkv").frames
    assert back.shape == frames.shape
    alpha_error = np.abs(back[..., 3].astype(float) - frames[..., 3]).mean() / 255
    assert alpha_error < 0.1, alpha_error


def _latents(capsys) -> None:
    write_clip(Clip(varied_alpha_frames(5, 16, 16), 12), "in.mkv")
    code, _, err = rgba(["encode", "in.mkv", "-o", "z.safetensors"], capsys)
    assert code == 0, err


def test_row9_nan_latents_are_refused(capsys):
    from safetensors import safe_open

    from rgbacli.pipelines.codec import save_latents

    _latents(capsys)
    with safe_open("z.safetensors", framework="pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
        z = f.get_tensor("latents")
    z[0, 0, 0, 0, 0] = float("nan")
    z[0, 1, 0, 0, 0] = float("inf")
    save_latents(Path("bad.safetensors"), z, meta)
    code, _, err = rgba(["decode", "bad.safetensors", "-o", "back.mkv"], capsys)
    assert code == 1 and error_line(err) == (f"rgba: error: bad.safetensors: 2 of {z.numel()} latent values are NaN "
                                             "or infinite; refusing to decode them")
    assert not Path("back.mkv").exists()


def test_row9_disk_full_on_a_png_sequence(capsys, monkeypatch):
    _latents(capsys)
    disk_full_after(monkeypatch, 3)
    code, _, err = rgba(["decode", "z.safetensors", "-o", "back.%04d.png"], capsys)
    assert code == 1 and "No space left on device" in error_line(err)
    assert sorted(os.listdir(".")) == ["in.mkv", "z.safetensors"]  # no frame of the sequence is left


def test_row9_read_only_train_out(capsys, monkeypatch, tmp_path):
    real = Path.mkdir

    def read_only(self, *a, **kw):
        if self.name == "run":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, _, err = rgba(["train", "base-vae", "--out", "ro/run", "--minutes", "0.01"], capsys)
    assert code == 1 and error_line(err) == "rgba: error: --out ro/run: cannot write the run folder (Read-only file system)"


def test_row9_a_pickle_given_to_decode(capsys):
    with open("z.safetensors", "wb") as f:
        pickle.dump({"latents": torch.zeros(1, 8, 1, 2, 2)}, f)
    code, _, err = rgba(["decode", "z.safetensors", "-o", "back.mkv"], capsys)
    assert code == 1 and error_line(err) == ("rgba: error: z.safetensors is not a safetensors file (latents files are "
                                             "made by `rgba encode`; pickles are never loaded)")


# --- row 10 -------------------------------------------------------------------------------------
def test_row10_stray_file_in_a_folder_and_odd_mp4(capsys):
    write_clip(Clip(varied_alpha_frames(3, 16, 16), 24), "frames")
    write_clip(Clip(varied_alpha_frames(1, 8, 8), 24), "frames/logo.png")
    code, _, err = rgba(["composite", "frames", "--over", "black", "-o", "x.mkv"], capsys)
    assert code == 1 and "logo.png" in error_line(err)
    write_clip(Clip(varied_alpha_frames(2, 211, 333), 24), "odd.mkv")
    code, out, err = rgba(["composite", "odd.mkv", "--over", "black", "-o", "odd.mp4", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["size"] == [334, 212] == list(read_clip("odd.mp4").size)
    code, _, err = rgba(["composite", "odd.mkv", "--over", "black", "-o", "odd2.mp4"], capsys)
    assert "334x212" in err and "333x211" not in err.split("wrote")[-1]


# --- VFX delivery flags on the CLI --------------------------------------------------------------
def test_delivery_flags(capsys):
    """--start-number, --bit-depth, --matte on decode and composite; --input-fps; --start/--duration trim."""
    frames = varied_alpha_frames(5, 16, 16)
    write_clip(Clip(frames, 12), "in.%04d.png", start_number=1001)
    code, out, err = rgba(["encode", "in.%04d.png", "--fps", "12", "-o", "z.safetensors", "--json"], capsys)
    assert code == 0 and json.loads(out)["fps"] == 12.0, err
    code, out, err = rgba(["decode", "z.safetensors", "-o", "b.%04d.png", "--start-number", "1001", "--bit-depth",
                           "16", "--matte"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in Path(".").glob("b.1*.png")) == [f"b.{n}.png" for n in range(1001, 1006)]
    assert sorted(p.name for p in Path(".").glob("b.matte.*.png")) == [f"b.matte.{n}.png" for n in range(1001, 1006)]
    import av

    with av.open("b.1001.png") as c:
        assert c.streams.video[0].codec_context.pix_fmt == "rgba64be"
    code, out, err = rgba(["composite", "in.%04d.png", "--input-fps", "12", "--over", "black", "-o", "t.%04d.tif",
                           "--start", "1", "--duration", "3", "--start-number", "7", "--bit-depth", "8", "--matte",
                           "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["frames"] == 3 and summary["fps"] == 12 and summary["matte"] == "t.matte.%04d.tif"
    assert sorted(p.name for p in Path(".").glob("t.0*.tif")) == ["t.0007.tif", "t.0008.tif", "t.0009.tif"]
    got = read_clip("t.%04d.tif").frames
    np.testing.assert_array_equal(got[0, ..., 3], np.full((16, 16), 255))  # over black: opaque
    code, _, err = rgba(["composite", "in.%04d.png", "--over", "black", "-o", "x.mkv", "--bit-depth", "16"], capsys)
    assert code == 2 and "bit depth 16 applies to PNG, TIFF and EXR outputs only" in err
    code, _, err = rgba(["generate", "a red orb", *SMALL, "-o", "g.mov", "--start-number", "5"], capsys)
    assert code == 2 and "a start number applies to image sequences" in err and not Path("g.mov").exists()


def test_safetensors_bytes_are_the_same_every_run(tmp_path):
    """Metadata in a fixed (sorted) order: two processes writing the same latents give the same bytes."""
    code = ("import sys, torch; from rgbacli.pipelines.codec import save_latents; "
            "save_latents(sys.argv[1], torch.arange(8.).reshape(1, 2, 1, 2, 2), "
            "{'format': 'rgbacli.latents/1', 'preset': 'tiny', 'fps': 8.0, 'width': 8, 'height': 8, 'frames': 1, "
            "'padded_frames': 1, 'z_dim': 2, 'had_alpha': True, 'normalization': 'x'})")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True, env=_env())
    data = [(tmp_path / n).read_bytes() for n in "abc"]
    assert data[0] == data[1] == data[2]
    header = json.loads(data[0][8:8 + int.from_bytes(data[0][:8], "little")])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    from rgbacli.pipelines.codec import load_latents

    z, meta = load_latents(tmp_path / "a")
    assert meta["preset"] == "tiny" and z.flatten().tolist() == list(range(8))
