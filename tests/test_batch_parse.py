"""Batch prompt files: plain lines, JSONL items, bad lines, output patterns, atomic outputs."""

from __future__ import annotations

import pytest

from rgbacli.errors import OutputExistsError, UsageError
from rgbacli.fsutil import atomic_output
from rgbacli.batch.plan import output_for, parse_prompt_lines, parse_size, slugify


def test_parse_lines_and_jsonl():
    text = "\n".join([
        "# comment",
        "a glass jellyfish",
        "",
        '{"prompt": "a red orb", "seed": 7, "frames": 9, "size": "32x48"}',
        '{"prompt": "broken"',
        '{"seed": 3}',
        '{"prompt": "x", "colour": "red"}',
        '{"prompt": "y", "size": "big"}',
    ])
    items = parse_prompt_lines(text)
    assert [i.index for i in items] == [0, 1, 2, 3, 4, 5]
    assert items[0].prompt == "a glass jellyfish" and items[0].line == 2 and items[0].error is None
    assert items[1].overrides == {"seed": 7, "frames": 9, "width": 32, "height": 48}
    assert items[2].error.startswith("line 5: invalid JSON")
    assert items[3].error == "line 6: missing or empty 'prompt'"
    assert items[4].error == "line 7: unknown key 'colour'"
    assert "bad size 'big'" in items[5].error


def test_output_pattern_and_slug():
    (item,) = parse_prompt_lines("A Glass Jellyfish, drifting!")
    assert slugify(item.prompt) == "a-glass-jellyfish-drifting"
    assert output_for("out/{index:03d}-{slug}-{seed}.mov", item, 5) == "out/000-a-glass-jellyfish-drifting-5.mov"
    with pytest.raises(UsageError, match="bad output pattern"):
        output_for("out/{nope}.mov", item, 0)
    assert parse_size("832x480") == (832, 480)
    with pytest.raises(UsageError):
        parse_size("832")


def test_atomic_output_never_clobbers(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="--force"):
        with atomic_output(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output(target, force=True) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]  # temp file removed
    with atomic_output(target, force=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_outputs_get_the_mode_a_plain_write_would_have(tmp_path):
    """mkstemp/mkdtemp are private (0600/0700); a finished output must be readable like any file the
    user writes (a render farm or a second account reads it), i.e. 0666/0777 less the umask."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "clip.mov") as tmp:
            tmp.write_bytes(b"x")
        with atomic_output(tmp_path / "frames", directory=True) as tmp:
            (tmp / "0001.png").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "clip.mov").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "frames").stat().st_mode) == 0o755
