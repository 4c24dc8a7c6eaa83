"""Pharmacokinetics (placeholder)."""
