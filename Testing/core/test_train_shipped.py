"""The shipped default decoder: small, fp16, for the right encoder, with the settings that made it."""
from synthfm.models import load_decoder_checkpoint
from synthfm.models.registry import SHIPPED_MODELS_DIR, get_spec


def test_shipped_synthfm_lite_decoder_is_small_fp16_and_documented():
    spec = get_spec("synthfm-lite")
    path = SHIPPED_MODELS_DIR / spec.decoder_file
    assert path.stat().st_size < 12e6, "the shipped decoder must stay small (fp16)"
    state, meta = load_decoder_checkpoint(path)
    assert meta["model"] == "synthfm-lite" and meta["encoder"] == spec.encoder and meta["image_size"] == 256
    assert meta["train_config"]["preset"] and meta["train_config"]["samples"] > 0 and meta["step"] > 0
    assert all(v.dtype.is_floating_point is False or str(v.dtype) == "torch.float16" for v in state.values())
    card = (SHIPPED_MODELS_DIR / "synthfm-lite.md").read_text()
    assert "decoder only" in card and "synthfm train" in card and f"step {meta['step']}" in card
