"""The digital twin: replay a day of the fleet with the controller's real cycle and compare strategies."""
