"""SPARCS config."""
