"""Figures from arrays, one module per application (matplotlib, Agg backend)."""
