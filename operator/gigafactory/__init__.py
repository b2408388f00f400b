"""Gigafactory: a Kubernetes operator that dispatches coding-agent jobs to runner pools."""

__version__ = "0.1.0"
