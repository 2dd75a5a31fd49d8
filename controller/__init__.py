"""SPARCS controller."""
