"""Readers of raw data formats; each returns a SourceTables."""
