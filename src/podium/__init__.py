"""Podium: an orchestrator for on-demand change across a fleet of nodes."""

__version__ = "0.1.0"
