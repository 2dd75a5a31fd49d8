"""paho's MQTT 5 ``Properties`` share one set of lookup tables (edge/link.py) and pack as before."""

from __future__ import annotations

import struct

from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sparcs.edge.link import message_expiry, session_properties, share_property_tables


def test_properties_share_their_tables_and_pack_and_unpack_as_before():
    share_property_tables()  # idempotent: importing edge.link already did
    a, b = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.CONNECT)
    assert a.names is b.names and a.properties is b.properties and a.types is b.types
    assert a.packetType == PacketTypes.PUBLISH and b.packetType == PacketTypes.CONNECT
    assert message_expiry(90).pack() == b"\x05\x02\x00\x00\x00\x5a"  # length 5, id 2, 90 s
    assert session_properties().pack() == b"\x05\x11\x00\x01\x51\x80"  # id 17, 86,400 s
    # a received PUBLISH with a message expiry: decoded into an instance of its own
    props = message_expiry(30).pack()
    body = struct.pack("!H", 3) + b"a/b" + struct.pack("!H", 7) + props + b"payload"
    got = _packet.decode_publish(0x32, body, _packet.MQTTProtocolVersion.MQTTv5)
    assert got.properties is not None and got.properties.MessageExpiryInterval == 30
    assert got.payload == b"payload" and got.mid == 7
    assert not hasattr(Properties(PacketTypes.PUBLISH), "MessageExpiryInterval")  # values stay per instance
