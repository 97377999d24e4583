"""Model registry, weights resolution, decoder checkpoints and the real LiteMedSAM weights."""
import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch

from synthfm.models import MODEL_REGISTRY, build_model, load_model, save_decoder_checkpoint
from synthfm.models.weights import WeightSource, resolve_weights


@functools.lru_cache(maxsize=1)
def medsam_lite():
    return load_model("medsam-lite")


def _ellipse_image(rng):
    yy, xx = np.mgrid[:256, :256]
    truth = ((xx - 120) / 40.0) ** 2 + ((yy - 140) / 25.0) ** 2 < 1
    img = 0.3 + 0.4 * truth + rng.normal(0, 0.08, truth.shape)
    img = (img - img.min()) / (img.max() - img.min())
    return torch.tensor(img, dtype=torch.float32)[None, None].repeat(1, 3, 1, 1), truth


def test_litemedsam_weights_load_strictly_and_segment_a_box():
    model = medsam_lite()
    image, truth = _ellipse_image(np.random.default_rng(0))
    ys, xs = np.nonzero(truth)
    box = torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32)
    with torch.inference_mode():
        out = model.decode(model.encode(image), boxes=box)
    pred = (out.logits[0, 0] > 0).numpy()
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.9, dice


def test_build_model_has_fresh_decoder_and_frozen_pretrained_encoder():
    fresh = build_model("synthfm-lite")
    published = medsam_lite()
    for (name, a), b in zip(fresh.image_encoder.state_dict().items(), published.image_encoder.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.allclose(fresh.mask_decoder.iou_token.weight, published.mask_decoder.iou_token.weight)
    assert not any(p.requires_grad for p in fresh.image_encoder.parameters())
    assert all(p.requires_grad for p in fresh.mask_decoder.parameters())


def test_checkpoint_round_trip_and_wrong_encoder(tmp_path):
    model = build_model("tiny-test")
    path = save_decoder_checkpoint(tmp_path / "d.pt", model, {"model": "tiny-test"}, half=False)
    back = load_model(path)
    for k, v in model.decoder_state_dict().items():
        assert torch.equal(v, back.decoder_state_dict()[k]), k
    assert back.checkpoint_meta["encoder"] == "tiny"
    wrong = save_decoder_checkpoint(tmp_path / "w.pt", model, {"model": "synthfm-lite"})
    with pytest.raises(ValueError, match="trained for encoder tiny, not tinyvit"):
        load_model(wrong)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a readable SynthFM decoder checkpoint"):
        load_model(junk)


def test_missing_decoder_and_unknown_model_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHFM_MODELS", str(tmp_path))
    monkeypatch.setattr("synthfm.models.registry.SHIPPED_MODELS_DIR", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="synthfm train --model synthfm-lite"):
        load_model("synthfm-lite")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load_model("nope")


def test_registry_entries_are_consistent():
    for name, spec in MODEL_REGISTRY.items():
        assert spec.image_size in (128, 256, 1024), name
        if spec.encoder.startswith("vit"):
            assert spec.encoder_weights.url.startswith("https://") and len(spec.encoder_weights.sha256) == 64
        if spec.decoder == "synthfm" and spec.encoder != "tiny":
            assert spec.decoder_file.endswith(".pt")


def _source(tmp_path, payload: bytes, url: str, good: bool = True) -> WeightSource:
    digest = hashlib.sha256(payload if good else b"other").hexdigest()
    return WeightSource("w.bin", url=url, sha256=digest)


def test_download_from_file_url_verifies_and_caches(tmp_path):
    origin = tmp_path / "origin.bin"
    origin.write_bytes(b"weights" * 1000)
    cache = tmp_path / "cache"
    src = _source(tmp_path, origin.read_bytes(), origin.as_uri())
    path = resolve_weights(src, weights_dir=cache)
    assert path == cache / "w.bin" and path.read_bytes() == origin.read_bytes()
    origin.unlink()  # second call is served from the cache
    assert resolve_weights(src, weights_dir=cache) == path


def test_corrupt_download_leaves_nothing(tmp_path):
    origin = tmp_path / "origin.bin"
    origin.write_bytes(b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        resolve_weights(_source(tmp_path, b"", origin.as_uri(), good=False), weights_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())


def test_download_over_loopback_http_and_offline_message(tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    (served / "w.bin").write_bytes(b"x" * 5000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/w.bin"
        got = resolve_weights(_source(tmp_path, b"x" * 5000, url), weights_dir=tmp_path / "c1")
        assert got.read_bytes() == b"x" * 5000
        with pytest.raises(FileNotFoundError, match="put it at"):
            resolve_weights(_source(tmp_path, b"", url + ".missing"), weights_dir=tmp_path / "c2")
    finally:
        server.shutdown()
        server.server_close()


def test_the_test_model_has_the_same_random_weights_whatever_ran_before():
    """tiny-test's random decoder is seeded (tests built on it must not depend on their order), and building it
    leaves the global random state where it was."""
    torch.manual_seed(1)
    first = load_model("tiny-test").state_dict()
    after = torch.rand(3)
    torch.manual_seed(1)
    torch.rand(7)  # something else ran before
    second = load_model("tiny-test").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(3), after)  # the global stream is untouched by the build
