"""SPARCS drivers."""
