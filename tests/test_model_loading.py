import pickle

import pytest
import torch
from conftest import TINY_ARCH
from safetensors.torch import save_file

from clipbench.errors import ConfigError
from clipbench.models import load_model
from clipbench.models.checkpoints import compact_rows


def _outputs(loaded):
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    return loaded.encode_image(images), loaded.encode_text(["a red circle", "a blue square"])


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return load_model(TINY_ARCH, None, reuse=False)


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".safetensors"])
def test_local_checkpoint_reproduces_outputs(tmp_path, reference, suffix):
    path = tmp_path / f"weights{suffix}"
    state = {k: v.clone() for k, v in reference.model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = load_model(TINY_ARCH, str(path), reuse=False)
    for a, b in zip(_outputs(reference), _outputs(loaded)):
        assert torch.equal(a, b)
    assert loaded.fingerprint != reference.fingerprint


def test_wrapped_training_checkpoint(tmp_path, reference):
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in reference.model.state_dict().items()}}, path)
    loaded = load_model(TINY_ARCH, str(path), reuse=False)
    assert torch.equal(_outputs(reference)[0], _outputs(loaded)[0])


def test_compact_rows_expand_to_the_same_model_on_used_tokens(tmp_path, reference):
    state = {k: v.clone() for k, v in reference.model.state_dict().items()}
    used = torch.unique(reference.tokenizer(["a red circle", "a blue square"]))
    save_file(compact_rows(state, "token_embedding.weight", used), str(tmp_path / "c.safetensors"))
    assert (tmp_path / "c.safetensors").stat().st_size < sum(v.numel() * 4 for v in state.values()) / 4
    loaded = load_model(TINY_ARCH, str(tmp_path / "c.safetensors"), reuse=False)
    assert torch.equal(_outputs(reference)[1], _outputs(loaded)[1])
    unused = torch.ones(loaded.model.token_embedding.weight.shape[0], dtype=torch.bool)
    unused[used] = False
    assert loaded.model.token_embedding.weight[unused].abs().sum() == 0


class _Evil:
    def __reduce__(self):
        return (print, ("owned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(ConfigError, match="weights_only"):
        load_model(TINY_ARCH, str(path), reuse=False)


def test_mismatched_checkpoint_names_the_problem(tmp_path):
    torch.save({"visual.proj": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="does not fit"):
        load_model(TINY_ARCH, str(tmp_path / "other.pt"), reuse=False)


def test_unknown_arch_and_tag_and_missing_file():
    with pytest.raises(ConfigError, match="model.arch"):
        load_model("NoSuchModel", None)
    with pytest.raises(ConfigError, match="open_clip tag"):
        load_model("ViT-B-32", "no_such_tag")
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(TINY_ARCH, "/missing/weights.safetensors")


def test_random_init_warns():
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        load_model(TINY_ARCH, None, reuse=False)


@pytest.mark.parametrize("spelling", [None, "", "null", "none", "None"])
def test_every_spelling_of_no_weights_is_a_random_init(spelling):
    from clipbench.models.weights import no_weights
    from clipbench.report.tables import model_label

    assert no_weights(spelling)
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        loaded = load_model(TINY_ARCH, spelling, reuse=False)
    assert loaded.pretrained is None and loaded.fingerprint.startswith(f"{TINY_ARCH}@") and "|random-init-" in loaded.fingerprint
    assert model_label(TINY_ARCH, spelling) == f"{TINY_ARCH} (random init)"


def test_a_named_checkpoint_is_not_no_weights():
    from clipbench.models.weights import no_weights

    assert not any(no_weights(p) for p in ("openai", "NULL.pt", "weights/none.safetensors", "laion2b_s34b_b79k"))


def test_bf16_autocast_on_cpu_runs(reference):
    loaded = load_model(TINY_ARCH, None, precision="bf16", reuse=False)
    feats = loaded.encode_image(torch.randn(2, 3, 32, 32))
    assert feats.dtype == torch.float32 and torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ConfigError, match="fp16"):
        load_model(TINY_ARCH, None, precision="fp16", device="cpu", reuse=False)


def test_geometry_of_known_archs():
    import open_clip

    for arch, size, patch, grid in [("ViT-B-32", 224, 32, 7), ("ViT-L-14-336", 336, 14, 24)]:
        cfg = open_clip.get_model_config(arch)["vision_cfg"]
        assert (cfg["image_size"], cfg["patch_size"], cfg["image_size"] // cfg["patch_size"]) == (size, patch, grid)
    tiny = load_model(TINY_ARCH, None)
    assert (tiny.geometry.image_size, tiny.geometry.patch_size, tiny.geometry.grid_size) == (32, 8, 4)


TEXT_TOWERS = ["toyclip", TINY_ARCH, "clipbench-test-convnext", "clipbench-test-eva", "clipbench-test-map",
               "clipbench-test-reg", "clipbench-test-coca", "ViT-B-32"]


def _encode_text_over(model, tokens, used: int) -> torch.Tensor:
    """open_clip's CLIP.encode_text, step by step, over the first ``used`` positions only."""
    from open_clip.transformer import text_global_pool

    tokens = tokens[:, :used]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:used].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:used, :used]))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    return model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection


@pytest.mark.parametrize("arch", TEXT_TOWERS)
def test_trimmed_text_encoding_equals_full_context(arch):
    import tests.tiny_towers  # noqa: F401  (registers the timm towers the test JSONs name)
    from clipbench.models.factory import encode_text_trimmed

    loaded = load_model(arch, None)
    model = loaded.model
    texts = ["a photo of a red circle.", "a", "point cloud depth map of a cone.", "word " * 200]
    tokens = loaded.tokenizer(texts[:3])
    used = int((tokens != 0).nonzero()[:, 1].max()) + 1
    assert used < tokens.shape[1]  # fewer positions than the context: the trimmed path applies where it can
    with torch.no_grad():
        full = model.encode_text(tokens)
        trimmed = encode_text_trimmed(model, tokens)
        if arch == "clipbench-test-coca":  # CoCa's text tower (cls token, pad mask) runs unchanged
            assert torch.equal(trimmed, full)
        else:
            assert torch.equal(trimmed, _encode_text_over(model, tokens, used))  # the same operations, bit for bit
            assert model.positional_embedding.shape[0] == model.attn_mask.shape[0] == tokens.shape[1]  # restored
    assert torch.allclose(full, trimmed, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # a truncated (full-length) caption takes the plain path and still agrees
        assert torch.allclose(model.encode_text(loaded.tokenizer(texts)), encode_text_trimmed(model, loaded.tokenizer(texts)), atol=1e-5, rtol=1e-4)


def test_missing_or_corrupt_bundled_checkpoint_says_how_to_regenerate(tmp_path, monkeypatch):
    from clipbench.config import ASSETS_DIR

    missing = ASSETS_DIR / "no-such-toy.safetensors"
    with pytest.raises(ConfigError, match="python scripts/train_toy_clip.py"):
        load_model(TINY_ARCH, str(missing), reuse=False)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ConfigError, match="corrupt or unreadable"):
        load_model(TINY_ARCH, str(corrupt), reuse=False)
