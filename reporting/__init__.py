"""Offline reporting: results tables and curves from run folders (never imported by training)."""
