"""Official key layout, checkpoint validation and the random checkpoint writer (no MindSpore needed)."""
import json
import struct

import numpy as np
import pytest

from configs import load_config
from models.checkpoint import CheckpointError, bf16_to_float32, CheckpointReader, read_header, skipped_tensors
from models.components import COMPONENTS, component_keys, official_keys
from models.random_checkpoint import main as random_main, write_random_checkpoint
from tests.helpers import read_keys_tsv, REPO


@pytest.mark.parametrize("variant", ["sv3d_u", "sv3d_p"])
def test_official_keys_match_full_size_manifest(oracle, variant):
    ref = read_keys_tsv(oracle.parent / f"{variant}.keys.tsv")
    assert official_keys(load_config(variant)) == ref


@pytest.mark.parametrize("variant", ["sv3d_u", "sv3d_p"])
def test_official_keys_match_tiny_oracle_checkpoint(oracle, variant):
    ref = {k: tuple(v) for k, v in json.loads((oracle / f"{variant}_tiny" / "keys.json").read_text()).items()}
    assert official_keys(load_config(f"{variant}_tiny")) == ref
    header = read_header(oracle / f"{variant}_tiny" / "checkpoint.safetensors")
    assert header.shapes == ref


def test_oracle_checkpoint_validates_and_skips_unused_by_name(oracle):
    cfg = load_config("sv3d_u_tiny")
    reader = CheckpointReader(oracle / "sv3d_u_tiny" / "checkpoint.safetensors", cfg)
    skipped = skipped_tensors(reader.header, cfg)
    assert "conditioner.embedders.0.open_clip.model.token_embedding.weight" in skipped
    assert "conditioner.embedders.1.encoder.post_quant_conv.weight" in skipped
    assert any(k.startswith("conditioner.embedders.1.encoder.decoder.") for k in skipped)
    used = sum(len(component_keys(cfg, c)) for c in COMPONENTS)
    assert used + len(skipped) == len(reader.header.tensors)


def test_variant_mismatch_lists_the_tensor_and_hints(oracle):
    with pytest.raises(CheckpointError) as e:
        CheckpointReader(oracle / "sv3d_p_tiny" / "checkpoint.safetensors", load_config("sv3d_u_tiny"))
    msg = str(e.value)
    assert "label_emb.0.0.weight" in msg and "(128, 80)" in msg and "(128, 16)" in msg
    assert "other variant" in msg


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
    from safetensors.numpy import save_file

    cfg = load_config("sv3d_u_tiny")
    keys = official_keys(cfg)
    tensors = {k: np.zeros(s, np.float32) for k, s in keys.items() if k != "model.diffusion_model.out.2.bias"}
    tensors["model.diffusion_model.bogus.weight"] = np.zeros((2,), np.float32)
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as e:
        CheckpointReader(path, cfg)
    assert "1 missing tensor(s)" in str(e.value) and "out.2.bias" in str(e.value)
    assert "1 unexpected tensor(s)" in str(e.value) and "bogus.weight" in str(e.value)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_header(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_header(junk)
    notjson = tmp_path / "notjson.safetensors"
    notjson.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{x")
    with pytest.raises(CheckpointError, match="header is not JSON"):
        read_header(notjson)
    with pytest.raises(CheckpointError, match="not a file"):
        read_header(tmp_path)


def test_truncated_checkpoint_is_detected(tmp_path):
    cfg = load_config("sv3d_u_tiny")
    path = tmp_path / "full.safetensors"
    write_random_checkpoint(cfg, path, progress=False)
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_header(cut)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_random_checkpoint_has_official_layout_and_reads_back(tmp_path, dtype):
    from safetensors.numpy import load_file

    cfg = load_config("sv3d_p_tiny")
    path = tmp_path / f"r_{dtype}.safetensors"
    info = write_random_checkpoint(cfg, path, dtype=dtype, seed=5, progress=False)
    assert info["tensors"] == len(official_keys(cfg))
    loaded = load_file(str(path))          # the safetensors package itself reads our streamed file
    assert {k: v.shape for k, v in loaded.items()} == official_keys(cfg)
    assert all(np.any(v != 0) for v in loaded.values()), "every tensor must be non-zero"
    want = np.float16 if dtype == "fp16" else np.float32
    assert all(v.dtype == want for v in loaded.values())
    reader = CheckpointReader(path, cfg)
    w = reader.get("model.diffusion_model.out.2.weight")
    assert w.dtype == np.float32 and np.allclose(w, loaded["model.diffusion_model.out.2.weight"].astype(np.float32))
    # deterministic per seed
    again = write_random_checkpoint(cfg, tmp_path / "again.safetensors", dtype=dtype, seed=5, progress=False)
    assert (tmp_path / "again.safetensors").read_bytes() == path.read_bytes() and again["bytes"] == info["bytes"]


def test_bf16_tensors_are_widened(tmp_path):
    # a one-tensor BF16 file written by hand: 1.5 and -2.0 in bfloat16
    raw = np.array([0x3FC0, 0xC000], dtype="<u2").tobytes()
    header = json.dumps({"t": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw)
    h = read_header(path)
    assert h.tensors["t"].dtype == "BF16" and h.tensors["t"].shape == (2,)
    np.testing.assert_array_equal(bf16_to_float32(np.frombuffer(raw, "<u2")), np.array([1.5, -2.0], np.float32))


def test_random_checkpoint_cli_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    assert random_main(["-c", "sv3d_u_tiny", "-o", str(out)]) == 0
    assert random_main(["-c", "sv3d_u_tiny", "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert random_main(["-c", "no_such_config", "-o", str(tmp_path / "d.safetensors")]) == 2
