"""The client's decoding (drivers.link) gives what pymodbus's own gives: FC 3 replies for any payload, and every PDU."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from sparcs.drivers.link import FastReadHoldingResponse, QuietDecoder, _client


def _decoded(cls: type[ReadHoldingRegistersResponse], data: bytes) -> list[int] | str:
    pdu = cls()
    try:
        pdu.decode(data)
    except ModbusIOException as exc:
        return f"error: {exc}"
    return pdu.registers


@given(st.integers(0, 255), st.binary(max_size=260))
def test_equals_pymodbus_for_any_byte_count_and_payload(byte_count: int, payload: bytes):
    data = bytes([byte_count]) + payload
    assert _decoded(FastReadHoldingResponse, data) == _decoded(ReadHoldingRegistersResponse, data)


@pytest.mark.parametrize("count", [1, 2, 52, 125])
def test_a_full_reply_decodes_every_register(count: int):
    regs = [(i * 40503) & 0xFFFF for i in range(count)]
    data = bytes([2 * count]) + b"".join(r.to_bytes(2, "big") for r in regs)
    assert _decoded(FastReadHoldingResponse, data) == regs
    assert _decoded(FastReadHoldingResponse, data[:-1]).startswith("error: ")


FRAMES = [
    bytes([3, 4, 0x12, 0x34, 0xAB, 0xCD]),  # FC 3, two registers
    bytes([3, 9, 1, 2]),  # FC 3, byte count beyond the frame
    bytes([6, 0x9C, 0x40, 0, 7]),  # FC 6 echo
    bytes([16, 0x9C, 0x40, 0, 3]),  # FC 16 reply
    bytes([0x83, 2]),  # exception: illegal address
    bytes([0x86, 3]),  # exception: illegal value
    bytes([0x41, 0, 0]),  # a function code pymodbus does not know
    bytes([6, 0x9C]),  # FC 6 cut short
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f.hex())
def test_quiet_decoder_gives_pymodbus_s_pdu(frame: bytes):
    stock, quiet = DecodePDU(False), QuietDecoder()
    a, b = stock.decode(frame), quiet.decode(frame)
    assert type(a) is type(b)
    assert (a is None and b is None) or vars(a) == vars(b)


async def test_links_decode_with_the_fast_classes():
    c = _client("127.0.0.1", 1, 1.0)
    decoder = c.ctx.framer.decoder
    assert isinstance(decoder, QuietDecoder)
    assert decoder.pdu_table[3][1] is FastReadHoldingResponse
    c.close()
