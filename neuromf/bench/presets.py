"""The benchmark's network presets and step kinds. Latents: (B, C, D, H, W) with (C, D, H, W) = a preset's `shape`."""

from __future__ import annotations

PRESETS = {
    # production: conf/model/maisi.yaml, 4 x 48^3 latents
    "maisi": dict(
        model=dict(
            in_channels=4,
            num_channels=(64, 128, 256, 512),
            attention_levels=(False, False, True, True),
            num_res_blocks=2,
            num_head_channels=(0, 0, 32, 32),
            norm_num_groups=32,
        ),
        shape=(4, 48, 48, 48),
        batch=8,
        dtype="bf16",
    ),
    # CI smoke: runs in seconds on a CPU
    "cpu-small": dict(
        model=dict(
            in_channels=1,
            num_channels=(8, 16),
            attention_levels=(False, True),
            num_res_blocks=1,
            num_head_channels=8,
            norm_num_groups=4,
        ),
        shape=(1, 16, 16, 16),
        batch=2,
        dtype="fp32",
    ),
}

STRATEGIES = ("fm", "meanflow", "imf", "imf_separate", "jvp_only")

IMF_KINDS = ("imf", "imf_separate")
