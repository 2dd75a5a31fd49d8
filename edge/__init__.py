"""Edge gateways over MQTT: the edge protocol, the edge, and the central's side of the broker (docs/edges.md)."""
