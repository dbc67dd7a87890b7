"""The shipped weight files are what their generators make from the trainers' output.

The injection classifier's serving file ``injection_lr.pack.z`` is derived from the trainer's
``injection_lr.json.gz`` by ``scripts/pack_injection.py``; the packing is deterministic, so the
shipped bytes must equal a fresh pack, and loading the pack must give the JSON's weights.
The name tagger keeps its shipped files; its packed in-memory weights must write them back
unchanged.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.prompting.classifier import (
    MODEL_RESOURCE,
    PACK_RESOURCE,
    InjectionClassifier,
    shipped,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = resources.files("bastion.safety.prompting").joinpath("data")


def _pack_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pack_injection", ROOT / "scripts" / "pack_injection.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_pack_is_the_generator_output_of_the_shipped_json() -> None:
    json_blob = DATA.joinpath(MODEL_RESOURCE).read_bytes()
    packed = _pack_script().pack(json_blob)
    assert DATA.joinpath(PACK_RESOURCE).read_bytes() == packed
    assert _pack_script().pack(json_blob) == packed  # deterministic
    assert len(packed) < len(json_blob)


def test_check_mode_of_the_script_agrees() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pack_injection.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "matches" in out.stdout


def test_pack_loads_the_json_weights_and_metadata() -> None:
    model = shipped()
    ref = InjectionClassifier.from_json(DATA.joinpath(MODEL_RESOURCE).read_bytes())
    assert model.weights == ref.weights  # bit-identical floats, every feature
    assert len(model.weights) > 100_000
    for attr in ("bias", "version", "window", "start", "threshold"):
        assert getattr(model, attr) == getattr(ref, attr)


def test_truncated_pack_is_refused() -> None:
    import zlib

    body = zlib.decompress(DATA.joinpath(PACK_RESOURCE).read_bytes())
    with pytest.raises(ValueError, match="truncated"):
        InjectionClassifier.from_pack(zlib.compress(body[:-10]))


FEATURE = st.text(alphabet="abcé<>s!?漢", min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.one_of(FEATURE, st.tuples(FEATURE, FEATURE).map(" ".join)),
        st.floats(-8, 8, allow_nan=False).filter(lambda w: abs(w) > 0.2),
        min_size=1,
        max_size=40,
    ),
    st.floats(-3, 3),
)
def test_any_model_round_trips_through_the_pack_as_through_the_json(
    weights: dict[str, float], bias: float
) -> None:
    model = InjectionClassifier(weights, bias, version="prop", start=True)
    via_json = InjectionClassifier.from_json(model.to_json())
    via_pack = InjectionClassifier.from_pack(model.to_pack())
    assert via_pack.weights == via_json.weights
    assert via_pack.to_pack() == model.to_pack()
    assert via_pack.bias == bias and via_pack.start
    for text in ("a b c", "<s> é! 漢", " ".join(weights)):
        assert via_pack.verdict(text) == via_json.verdict(text)


def test_name_tagger_files_are_what_its_writer_makes_of_the_loaded_model(tmp_path: Path) -> None:
    """The packed in-memory weights lose nothing: ``bench/train_ner.py``'s writer, given the
    loaded model, reproduces the shipped weight file byte for byte and the gazetteer text."""
    import zlib

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import train_ner
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from bastion.safety.pii._names import Packed, load_model

    model = load_model()
    assert isinstance(model.weights, Packed)
    train_ner.write(model, tmp_path)
    data = resources.files("bastion.safety.pii").joinpath("data")
    shipped_weights = data.joinpath("names_weights.bin.z").read_bytes()
    assert zlib.decompress((tmp_path / "names_weights.bin.z").read_bytes()) == zlib.decompress(
        shipped_weights
    )
    assert zlib.decompress((tmp_path / "names.txt.z").read_bytes()) == zlib.decompress(
        data.joinpath("names.txt.z").read_bytes()
    )
