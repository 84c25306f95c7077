"""Tiny word tokenizer + transformer text encoder: vocabulary, warnings, padding, save/load."""

from __future__ import annotations

import pytest
import torch

from rgbacli.data import caption_vocabulary
from rgbacli.errors import WeightsError
from rgbacli.models.text_encoder import PAD, TinyTextEncoder, WordTokenizer


@pytest.fixture(scope="module")
def enc():
    return TinyTextEncoder(seed=0).eval()


def test_vocab_is_deterministic_and_covers_the_data():
    tok = WordTokenizer()
    assert tok.vocab[0] == PAD and tok.vocab[1:] == sorted(tok.vocab[1:])
    assert tok.vocab == WordTokenizer().vocab
    assert set(caption_vocabulary()) == set(tok.vocab[1:])


def test_tokenizer_ids_mask_and_case(capsys):
    tok = WordTokenizer(max_len=24)
    ids, mask = tok(["A Glass JELLYFISH drifting upward!", ""])
    assert ids.shape == (2, 24) and mask.dtype == torch.bool
    assert mask[0].sum() == 5 and mask[1].sum() == 0
    assert (ids[0, 5:] == 0).all() and (ids[1] == 0).all()
    assert ids[0, 2] == tok.ids["jellyfish"]
    assert capsys.readouterr().err == ""


def test_unknown_words_are_ignored_with_a_warning(capsys):
    tok = WordTokenizer()
    ids, mask = tok("a purplish zebra and a red orb on the background, zebra")
    err = capsys.readouterr().err
    assert 'rgba: warning: unknown words ignored: "purplish", "zebra"' in err
    assert err.count("zebra") == 1 and "background" not in err  # stopwords are silent
    words = [tok.vocab[i] for i in ids[0][mask[0]].tolist()]
    assert words == ["a", "and", "a", "red", "orb", "the"]


def test_long_prompts_are_truncated_with_a_warning(capsys):
    tok = WordTokenizer(max_len=4)
    ids, mask = tok("a red orb and a blue star")
    assert mask.sum() == 4
    assert "longer than 4" in capsys.readouterr().err


def test_encoder_shapes_and_zeroed_padding(enc):
    h, mask = enc.encode(["a glowing red orb", "a translucent blue bubble floating to the left", ""])
    assert h.shape == (3, 24, 128) and mask.shape == (3, 24)
    assert torch.isfinite(h).all()
    assert (h[~mask] == 0).all() and (h[2] == 0).all()
    assert h[0, :4].abs().sum(-1).min() > 0
    assert enc.config == {"vocab_size": len(enc.vocab), "width": 128, "layers": 2, "heads": 4,
                          "max_len": 24, "ffn_mult": 4, "dropout": 0.0}


def test_padding_does_not_change_real_tokens(enc):
    tok = enc.tokenizer
    ids, mask = tok(["a red star spinning"])
    full = enc(ids, mask)
    short = enc(ids[:, :4], mask[:, :4])  # same tokens, no padding at all
    assert torch.allclose(full[:, :4], short, atol=1e-5)


def test_different_prompts_differ_and_init_is_seeded(enc):
    h, _ = enc.encode(["a red orb", "a blue orb"])
    assert not torch.allclose(h[0], h[1])
    other = TinyTextEncoder(seed=0).eval()
    assert torch.equal(other.encode(["a red orb"])[0], enc.encode(["a red orb"])[0])


def test_gradients_flow(enc):
    m = TinyTextEncoder(seed=1)
    h, mask = m.encode(["a red orb bouncing"])
    # a random projection: h.sum() is constant under the final LayerNorm (its gradient only float noise)
    (h * torch.randn(h.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    assert m.embed.weight.grad is not None and m.embed.weight.grad[m.tokenizer.ids["red"]].abs().sum() > 0


def test_save_load_round_trip(tmp_path, enc):
    path = tmp_path / "text.safetensors"
    enc.save(path)
    loaded = TinyTextEncoder.load(path).eval()
    assert loaded.vocab == enc.vocab and loaded.config == enc.config
    for k, v in enc.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    prompts = ["a glass jellyfish drifting upward", ""]
    assert torch.equal(enc.encode(prompts)[0], loaded.encode(prompts)[0])


def test_load_errors_name_the_problem(tmp_path, enc):
    from safetensors.torch import save_file

    with pytest.raises(WeightsError, match="not found"):
        TinyTextEncoder.load(tmp_path / "missing.safetensors")
    state = {k: v.contiguous() for k, v in enc.state_dict().items()}
    save_file(state, str(tmp_path / "nometa.safetensors"))
    with pytest.raises(WeightsError, match="metadata"):
        TinyTextEncoder.load(tmp_path / "nometa.safetensors")
    missing = dict(state)
    missing.pop("norm.weight")
    save_file(missing, str(tmp_path / "partial.safetensors"), metadata=enc.metadata())
    with pytest.raises(WeightsError, match="missing key 'norm.weight'"):
        TinyTextEncoder.load(tmp_path / "partial.safetensors")
    extra = dict(state, bogus=torch.zeros(1))
    save_file(extra, str(tmp_path / "extra.safetensors"), metadata=enc.metadata())
    with pytest.raises(WeightsError, match="unexpected key 'bogus'"):
        TinyTextEncoder.load(tmp_path / "extra.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError):
        TinyTextEncoder.load(tmp_path / "junk.safetensors")
