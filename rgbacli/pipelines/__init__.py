"""Pipelines: the sampling loops that turn engine components into RGBA frames."""
