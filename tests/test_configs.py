"""Typed, validated configs: bundled variants load, the tiny ones reproduce the oracle's sgm configs, and every
kind of mistake names the field."""
import dataclasses

import pytest
import yaml

from configs import ConfigError, bundled_names, config_from_dict, load_config


def test_bundled_configs_load():
    assert {"sv3d_u", "sv3d_p", "sv3d_u_tiny", "sv3d_p_tiny"} <= set(bundled_names())
    u, p = load_config("sv3d_u"), load_config("sv3d_p")
    assert (u.variant, p.variant) == ("sv3d_u", "sv3d_p")
    assert u.unet.adm_in_channels == 256 and p.unet.adm_in_channels == 1280
    assert u.num_frames == 21 and u.resolution == 576 and u.scale_factor == 0.18215
    assert (u.sampler.sigma_max, u.sampler.sigma_min, u.sampler.rho) == (700.0, 0.002, 7.0)
    # the two variants differ only in the camera conditioning (SV3D_REFERENCE.md: "exactly three places")
    du, dp = u.to_dict(), p.to_dict()
    diff = {k for k in du if du[k] != dp[k]}
    assert diff == {"name", "variant", "unet", "conditioner"}
    assert {k for k in du["unet"] if du["unet"][k] != dp["unet"][k]} == {"adm_in_channels"}


def _sgm(oracle, variant):
    return yaml.safe_load((oracle / f"{variant}_tiny" / "config.yaml").read_text())["model"]["params"]


@pytest.mark.parametrize("variant", ["sv3d_u", "sv3d_p"])
def test_tiny_configs_reproduce_oracle_architecture(oracle, variant):
    sgm = _sgm(oracle, variant)
    cfg = load_config(f"{variant}_tiny")
    net = sgm["network_config"]["params"]
    assert cfg.unet.model_channels == net["model_channels"]
    assert list(cfg.unet.channel_mult) == net["channel_mult"]
    assert cfg.unet.num_res_blocks == net["num_res_blocks"]
    assert list(cfg.unet.attention_resolutions) == net["attention_resolutions"]
    assert cfg.unet.num_head_channels == net["num_head_channels"]
    assert cfg.unet.context_dim == net["context_dim"]
    assert cfg.unet.adm_in_channels == net["adm_in_channels"]
    assert list(cfg.unet.video_kernel_size) == net["video_kernel_size"]
    assert cfg.scale_factor == sgm["scale_factor"]
    dd = sgm["first_stage_config"]["params"]["decoder_config"]["params"]
    assert cfg.vae.ch == dd["ch"] and list(cfg.vae.ch_mult) == dd["ch_mult"]
    assert cfg.vae.num_res_blocks == dd["num_res_blocks"] and cfg.vae.z_channels == dd["z_channels"]
    embedders = sgm["conditioner_config"]["params"]["emb_models"]
    outdims = {e["input_key"]: e["params"]["outdim"] for e in embedders if "outdim" in e.get("params", {})}
    assert outdims["cond_aug"] == cfg.conditioner.cond_aug_embed_dim
    if variant == "sv3d_p":
        assert outdims["polars_rad"] == outdims["azimuths_rad"] == cfg.conditioner.camera_embed_dim
    else:
        assert "polars_rad" not in outdims and cfg.conditioner.camera_embed_dim == 0
    smp = sgm["sampler_config"]["params"]
    assert smp["num_steps"] == cfg.sampler.num_steps
    assert smp["discretization_config"]["params"]["sigma_max"] == cfg.sampler.sigma_max
    assert smp["guider_config"]["params"]["max_scale"] == cfg.guider.max_scale
    assert smp["guider_config"]["params"]["num_frames"] == cfg.num_frames


def _base():
    return load_config("sv3d_u").to_dict()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["unet"].update(model_channels="320"), "unet.model_channels: expected an integer, got str"),
    (lambda d: d["unet"].update(bogus=1), "unknown field(s) ['bogus']"),
    (lambda d: d.update(variant="sv3d_x"), "variant must be one of"),
    (lambda d: d["unet"].update(adm_in_channels=1280), "unet.adm_in_channels 1280 must equal the vector width"),
    (lambda d: d["conditioner"].update(camera_embed_dim=512), "sv3d_u has no camera conditioning"),
    (lambda d: d.update(resolution=570), "resolution 570 must be a multiple of latent_factor 8"),
    (lambda d: d["vae"].update(ch_mult=[1, 2, 4]), "down-samples by 4, but latent_factor is 8"),
    (lambda d: d["clip"].update(output_dim=512), "clip.output_dim 512 must equal unet.context_dim 1024"),
    (lambda d: d["guider"].update(kind="cosine"), "guider.kind must be one of"),
    (lambda d: d["sampler"].update(sigma_min=800.0), "sampler.sigma_min 800.0 must be < sigma_max"),
    (lambda d: d["unet"].update(video_kernel_size=[3, 3, 1]), "video_kernel_size must be [odd, 1, 1]"),
    (lambda d: d["unet"].update(channel_mult=[1, 2], attention_resolutions=[2, 1]), None),
    (lambda d: d["unet"].update(attention_resolutions=[16]), "is no level's down-sampling factor"),
    (lambda d: d["clip"].update(mean=[0.5, 0.5]), "expected 3 values, got 2"),
    (lambda d: d.update(num_frames=True), "num_frames: expected an integer, got bool"),
    (lambda d: d["guider"].update(triangle_period=0.0), "guider.triangle_period must be > 0"),
    (lambda d: d["conditioner"].update(dynamic_elevation_amplitude_deg=85.0),
     "keep the dynamic orbit around the default elevation (10.0 +- 85.0) within elevation_range_deg"),
    (lambda d: d["conditioner"].update(default_elevation_deg=95.0), "must lie in elevation_range_deg"),
])
def test_invalid_configs_name_the_field(mutate, message):
    d = _base()
    mutate(d)
    if message is None:           # a valid change: must build
        config_from_dict(d)
        return
    with pytest.raises(ConfigError) as e:
        config_from_dict(d)
    assert message in str(e.value)


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("unet: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown config 'sv3d_z'"):
        load_config("sv3d_z")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty config"):
        load_config(empty)


def test_json_round_trip_and_hash():
    cfg = load_config("sv3d_p")
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.sha256() == cfg.sha256()
    assert load_config("sv3d_u").sha256() != cfg.sha256()


def test_runtime_config_is_the_runtime_part_of_the_config():
    """The runtime section of a manifest; the schema defaults (shown by the CLI help) are the official values."""
    from configs import RuntimeConfig, SV3DConfig, runtime_config_from_dict

    for name in ("sv3d_u", "sv3d_p", "sv3d_u_tiny", "sv3d_p_tiny"):
        cfg = load_config(name)
        r = cfg.runtime_config()
        assert isinstance(r, RuntimeConfig) and runtime_config_from_dict(r.to_dict()) == r
        assert (r.sampler, r.guider, r.conditioner, r.seed) == (cfg.sampler, cfg.guider, cfg.conditioner, cfg.seed)
        assert r.latent_size(576) == cfg.latent_size() == 72
    assert SV3DConfig().runtime_config() == load_config("sv3d_u").runtime_config()
    p = load_config("sv3d_p")
    assert p.runtime_config().has_camera and p.conditioner.dynamic_elevation_amplitude_deg == 20.0
    with pytest.raises(ConfigError, match="sv3d_u has no camera conditioning"):
        RuntimeConfig(**{**{f: getattr(p.runtime_config(), f) for f in ("latent_channels", "latent_factor",
                                                                         "scale_factor", "seed",
                                                                         "image_frame_ratio", "conditioner",
                                                                         "sampler", "guider")},
                         "variant": "sv3d_u"})


@pytest.mark.parametrize("frames, chunk, expected", [(21, 14, 7), (21, 21, 21), (21, 5, 3), (21, 40, 21), (8, 6, 4),
                                                     (7, 3, 1)])
def test_decoder_call_frames_is_the_largest_divisor_within_decode_chunk(frames, chunk, expected):
    """An export decodes no padding frames by default: 21 frames with decoding_t 14 -> 3 calls of 7, not 14 + 7
    padded to 14 (28 frames decoded)."""
    cfg = dataclasses.replace(load_config("sv3d_u"), num_frames=frames, decode_chunk=chunk)
    assert cfg.decoder_call_frames() == expected
    assert frames % expected == 0 and expected <= min(frames, chunk)


def test_export_defaults_to_decoder_call_frames():
    from export import ExportOptions
    from export.api import _shapes

    cfg = load_config("sv3d_u")
    opts = ExportOptions(config="sv3d_u", checkpoint="unused.safetensors", out="unused")
    assert _shapes(cfg, opts).decode_chunk == cfg.decoder_call_frames() == 7
    assert _shapes(cfg, dataclasses.replace(opts, decode_chunk=14)).decode_chunk == 14
