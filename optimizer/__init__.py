"""SPARCS optimizer."""
