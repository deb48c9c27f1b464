"""The UNet and VAE layouts (models/unet_layout.py, models/vae_layout.py) against the official block table and
state-dict manifests (no MindSpore needed)."""
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from configs import load_config
from models.components import component_keys
from models.keys import UNET_PREFIX, VAE_DECODER_PREFIX, VAE_ENCODER_PREFIX
from models.unet_layout import CONV_IN, DOWNSAMPLE, RESBLOCK, unet_layout
from models.vae_layout import vae_layout
from tests.helpers import REPO, read_keys_tsv

# SV3D_REFERENCE.md §6.2 (full size, 72x72 latents): input blocks as (kind, c_in, c_out, ds, heads)
FULL_INPUTS = [(CONV_IN, 8, 320, 1, 0),
               (RESBLOCK, 320, 320, 1, 5), (RESBLOCK, 320, 320, 1, 5), (DOWNSAMPLE, 320, 320, 1, 0),
               (RESBLOCK, 320, 640, 2, 10), (RESBLOCK, 640, 640, 2, 10), (DOWNSAMPLE, 640, 640, 2, 0),
               (RESBLOCK, 640, 1280, 4, 20), (RESBLOCK, 1280, 1280, 4, 20), (DOWNSAMPLE, 1280, 1280, 4, 0),
               (RESBLOCK, 1280, 1280, 8, 0), (RESBLOCK, 1280, 1280, 8, 0)]
# output blocks as (ResBlock input = h + skip channels, c_out, ds, heads, upsample)
FULL_OUTPUTS = [(2560, 1280, 8, 0, False), (2560, 1280, 8, 0, False), (2560, 1280, 8, 0, True),
                (2560, 1280, 4, 20, False), (2560, 1280, 4, 20, False), (1920, 1280, 4, 20, True),
                (1920, 640, 2, 10, False), (1280, 640, 2, 10, False), (960, 640, 2, 10, True),
                (960, 320, 1, 5, False), (640, 320, 1, 5, False), (640, 320, 1, 5, False)]


def _official(oracle, variant):
    """name -> shape of the official state dict: the full-size manifest, or the tiny oracle checkpoint's."""
    if variant.endswith("_tiny"):
        return {k: tuple(v) for k, v in json.loads((oracle / variant / "keys.json").read_text()).items()}
    return read_keys_tsv(oracle.parent / f"{variant}.keys.tsv")


def test_full_size_layout_is_the_reference_block_table():
    lay = unet_layout(load_config("sv3d_u").unet)
    assert [(b.kind, b.c_in, b.c_out, b.ds, b.heads) for b in lay.input_blocks] == FULL_INPUTS
    assert [b.index for b in lay.input_blocks] == list(range(12))
    assert (lay.middle.channels, lay.middle.ds, lay.middle.heads) == (1280, 8, 20)
    assert [(o.resblock_in, o.c_out, o.ds, o.heads, o.upsample) for o in lay.output_blocks] == FULL_OUTPUTS
    assert (lay.head.c_in, lay.head.c_out) == (320, 4)
    assert lay.middle.ds == load_config("sv3d_u").unet.downsample_factor    # the walk agrees with the config
    # every input block's output is one skip, taken last in, first out
    assert [o.skip for o in lay.output_blocks] == list(range(11, -1, -1))
    assert [o.skip_channels for o in lay.output_blocks] == [b.c_out for b in reversed(lay.input_blocks)]
    # transformers: input_blocks 1, 2, 4, 5, 7, 8; the middle block; output_blocks 3 to 11
    assert len(list(lay.transformers())) == 6 + 1 + 9


def test_tiny_layout_counts_and_channel_flow():
    u = load_config("sv3d_u_tiny").unet                 # channel_mult [1, 1, 2], 1 res block, attention at 1, 2
    lay = unet_layout(u)
    assert [b.kind for b in lay.input_blocks] == [CONV_IN, RESBLOCK, DOWNSAMPLE, RESBLOCK, DOWNSAMPLE, RESBLOCK]
    assert [b.ds for b in lay.input_blocks] == [1, 1, 1, 2, 2, 4]
    assert [b.heads for b in lay.input_blocks] == [0, 2, 0, 2, 0, 0]
    assert len(lay.output_blocks) == len(u.channel_mult) * (u.num_res_blocks + 1) == 6
    assert [o.skip for o in lay.output_blocks] == [5, 4, 3, 2, 1, 0]
    assert [o.skip_channels for o in lay.output_blocks] == [64, 32, 32, 32, 32, 32]
    assert [o.upsample for o in lay.output_blocks] == [False, True, False, True, False, False]
    # channels flow: each block takes what the one before gave; the upsamples undo the downsamples
    assert lay.middle.channels == lay.input_blocks[-1].c_out == lay.output_blocks[0].c_in
    for prev, o in zip(lay.output_blocks, lay.output_blocks[1:]):
        assert o.c_in == prev.c_out and o.ds == prev.ds_out
    assert lay.output_blocks[-1].ds_out == 1 and lay.head.c_in == lay.output_blocks[-1].c_out
    for _, ch, _, heads in lay.transformers():
        assert heads * u.num_head_channels == ch


@pytest.mark.parametrize("variant", ["sv3d_u", "sv3d_p", "sv3d_u_tiny", "sv3d_p_tiny"])
def test_layout_matches_the_official_state_dict(oracle, variant):
    """Each block's channels, attention and upsampler, read back from the official tensor shapes; and the keys
    built from the layout equal the official ones."""
    ref = _official(oracle, variant)
    cfg = load_config(variant)
    lay = unet_layout(cfg.unet)
    p = UNET_PREFIX
    for b in lay.input_blocks:
        if b.kind == CONV_IN:
            assert ref[f"{p}{b.name}.0.weight"] == (b.c_out, b.c_in, 3, 3)
        elif b.kind == DOWNSAMPLE:
            assert ref[f"{p}{b.name}.0.op.weight"] == (b.c_out, b.c_in, 3, 3)
        else:
            assert ref[f"{p}{b.name}.0.in_layers.2.weight"] == (b.c_out, b.c_in, 3, 3)
        assert (f"{p}{b.name}.1.proj_in.weight" in ref) == b.attention
    assert f"{p}input_blocks.{len(lay.input_blocks)}.0.in_layers.0.weight" not in ref
    for o in lay.output_blocks:
        assert ref[f"{p}{o.name}.0.in_layers.2.weight"] == (o.c_out, o.resblock_in, 3, 3)
        assert (f"{p}{o.name}.1.proj_in.weight" in ref) == o.attention
        up = f"{p}{o.name}.{2 if o.attention else 1}.conv.weight"
        assert (up in ref) == o.upsample
    assert f"{p}output_blocks.{len(lay.output_blocks)}.0.in_layers.0.weight" not in ref
    assert ref[f"{p}out.2.weight"] == (lay.head.c_out, lay.head.c_in, 3, 3)

    assert component_keys(cfg, "unet") == {k: s for k, s in ref.items() if k.startswith(UNET_PREFIX)}
    enc = tuple(VAE_ENCODER_PREFIX + s for s in ("encoder.", "quant_conv."))
    assert component_keys(cfg, "vae_encoder") == {k: s for k, s in ref.items() if k.startswith(enc)}
    dec = VAE_DECODER_PREFIX + "decoder."
    assert component_keys(cfg, "vae_decoder") == {k: s for k, s in ref.items() if k.startswith(dec)}


def test_vae_layout_levels():
    lay = vae_layout(load_config("sv3d_u").vae)         # ch 128, ch_mult [1, 2, 4, 4], 2 res blocks
    assert [(lv.name, lv.c_in, lv.c_out, lv.num_blocks, lv.ds, lv.resample) for lv in lay.encoder] == [
        ("down.0", 128, 128, 2, 1, True), ("down.1", 128, 256, 2, 2, True),
        ("down.2", 256, 512, 2, 4, True), ("down.3", 512, 512, 2, 8, False)]
    assert [(lv.name, lv.c_in, lv.c_out, lv.num_blocks, lv.ds, lv.resample) for lv in lay.decoder] == [
        ("up.3", 512, 512, 3, 8, True), ("up.2", 512, 512, 3, 4, True),
        ("up.1", 512, 256, 3, 2, True), ("up.0", 256, 128, 3, 1, False)]
    assert list(lay.decoder[2].blocks()) == [(512, 256), (256, 256), (256, 256)]
    assert (lay.mid_channels, lay.moments, lay.head_channels) == (512, 8, 128)
    assert lay.encoder[-1].ds == load_config("sv3d_u").vae.downsample_factor == 8


def test_head_width_must_be_model_channels():
    u = load_config("sv3d_u_tiny").unet
    with pytest.raises(ValueError, match=r"must start with 1.*got \[2, 2\]"):
        unet_layout(replace(u, channel_mult=(2, 2)))


def test_layouts_and_flop_counter_import_without_mindspore():
    code = ("import sys, models.unet_layout, models.vae_layout, models.flops, models.keys; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mindspore', 'onnx', 'benchmarks')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
