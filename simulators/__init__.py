"""SPARCS simulators."""
