"""Notebook library for pulltrace recordings and live collectors."""
