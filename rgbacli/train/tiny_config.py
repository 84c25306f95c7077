"""Architecture of the embedded tiny model (sized so the whole recipe trains on 2 CPU cores)."""

TINY_SIZE, TINY_FRAMES, TINY_FPS = 64, 17, 8.0

# Wan 2.1 VAE layout, 4x spatial / 2x temporal compression: 17x64x64 → 8x9x16x16 latents.
TINY_VAE = dict(base_dim=8, z_dim=8, dim_mult=[1, 2, 4], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True], scale_factor_temporal=2, scale_factor_spatial=4)

# WanTransformer3DModel; 4x4 patches → 9x4x4 = 144 tokens per clip.
TINY_DIT = dict(patch_size=[1, 4, 4], num_attention_heads=4, attention_head_dim=32, in_channels=8,
                out_channels=8, text_dim=128, freq_dim=64, ffn_dim=512, num_layers=6, rope_max_seq_len=64)
TINY_POS = dict(frames=16, rows=8, cols=8)  # absolute position table (covers up to 128x128, 31 frames)
# Initial std of each position table: three are summed, so 0.3 gives ~0.5, the scale of a patch token
# (much smaller and the tokens barely know where they are; the ablation is in docs/training.md).
TINY_POS_INIT_STD = 0.3
TEXT_MASK = True  # cross-attention skips padded text tokens (rgbacli/models/text_mask.py)

TINY_TEXT = dict(width=128, layers=2, heads=4, max_len=24)
TINY_VAE_LORA = dict(rank=8, alpha=8.0)  # scale 1; a conv LoRA costs ~r/channels of its conv (8–32 channels here)
TINY_DORA = dict(rank=16, alpha=16.0)
TINY_ALPHA_TOKENS = dict(rank=16, alpha=16.0)  # TransPixar alpha-token LoRA (reference: rank 128)
TINY_TORA = dict(channels=32, nums_rb=1)  # Tora: 128 channels, 2 residual blocks per DiT block
