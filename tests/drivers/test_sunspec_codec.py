"""The codec against pysunspec2's own reading of the same registers, for every model the issue names."""

from __future__ import annotations

import random
import struct

import pytest
import sunspec2.device as sd

from sparcs.drivers.sunspec_codec import decode, encode_point, model_def, raw_value

MODELS = [1, 101, 102, 103, 111, 112, 113, 120, 121, 122, 123, 124, 201, 202, 203, 204, 701, 702, 704, 713, 714]


def _fill(model: sd.Model, rng: random.Random) -> None:
    """Random implemented values for every top-level point; scale factors in -3..2."""
    for name, p in model.points.items():
        if name in ("ID", "L"):
            continue
        t = p.pdef["type"]
        if t == "sunssf":
            p.value = rng.randint(-3, 2)
        elif t in ("int16",):
            p.value = rng.randint(-30000, 30000)
        elif t in ("uint16", "enum16", "bitfield16", "count"):
            p.value = rng.randint(0, 60000)
        elif t in ("acc16", "acc32", "acc64", "uint32", "enum32", "bitfield32", "uint64"):
            p.value = rng.randint(1, 2_000_000)
        elif t in ("int32", "int64"):
            p.value = rng.randint(-2_000_000, 2_000_000)
        elif t == "float32":
            p.value = struct.unpack(">f", struct.pack(">f", rng.uniform(-1e4, 1e4)))[0]
        elif t == "string":
            p.value = "SN" + str(rng.randint(0, 99999))
        if name == "NPrt":
            p.value = 0


def _model(model_id: int) -> sd.Model:
    if model_id == 714:  # a repeating group needs its count: build it with no ports
        return sd.Model(model_id=714, data=struct.pack(">20H", 714, 18, *([0] * 18)))
    return sd.Model(model_id=model_id)


def _registers(model: sd.Model) -> list[int]:
    raw = model.get_mb()
    return list(struct.unpack(f">{len(raw) // 2}H", raw))


@pytest.mark.parametrize("model_id", MODELS)
def test_decode_equals_pysunspec2(model_id: int) -> None:
    rng = random.Random(model_id)
    ref = _model(model_id)
    _fill(ref, rng)
    regs = _registers(ref)
    ours = decode(model_id, regs)
    checked = 0
    for name, p in ref.points.items():
        if name in ("ID", "L") or p.pdef["type"] in ("sunssf", "pad") or name not in ours:
            continue
        expected = p.cvalue if p.pdef.get("sf") else p.value
        if isinstance(expected, float):
            assert ours[name] == pytest.approx(expected, rel=1e-6), name
        else:
            assert ours[name] == expected, name
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("model_id", [103, 113, 124, 203, 701, 704, 713])
def test_unimplemented_points_decode_to_none(model_id: int) -> None:
    regs = _registers(sd.Model(model_id=model_id))  # every point at its not-implemented value
    values = decode(model_id, regs)
    assert values and all(v is None for k, v in values.items() if model_def(model_id).point(k).type != "pad")


def test_scale_factor_applies_and_missing_sf_makes_value_missing() -> None:
    m = sd.Model(model_id=103)
    m.W.value, m.W_SF.value = 4321, -1
    assert decode(103, _registers(m), ["W"])["W"] == pytest.approx(432.1)
    m.W_SF.value = None  # SF not implemented: the value cannot be scaled
    assert decode(103, _registers(m), ["W"])["W"] is None


def test_short_block_leaves_points_beyond_it_missing() -> None:
    m = sd.Model(model_id=701)
    m.W.value, m.W_SF.value = 1500, 0
    regs = _registers(m)
    assert len(regs) == 155
    cut = regs[:125]  # the poller reads 701 in one request of 125 registers
    values = decode(701, cut, ["W", "MnAlrmInfo"])
    assert values == {"W": 1500, "MnAlrmInfo": None}


def test_offsets_follow_the_sunspec_tables() -> None:
    assert model_def(103).point("W").offset == 14
    assert model_def(123).point("WMaxLimPct").offset == 5
    assert model_def(124).point("InOutWRte_RvrtTms").offset == 15
    assert model_def(704).point("WMaxLimPctRvrtTms").offset == 18
    assert model_def(701).point("W_SF").offset == 116
    assert model_def(704).length == 65 and model_def(1).length == 66


def test_encode_point_round_trips_signed_values() -> None:
    p = model_def(704).point("WSet")
    regs = [0] * 70
    regs[p.offset : p.offset + 2] = encode_point(p, -2500)
    assert raw_value(regs, p) == -2500
    with pytest.raises(ValueError, match="does not fit"):
        encode_point(model_def(123).point("WMaxLimPct"), 70000)
