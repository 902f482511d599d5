"""Upstream wire formats and the table of well-known providers."""
