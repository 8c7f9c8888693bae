"""Custodes: insider-threat detection and response for SOC teams."""

__version__ = "0.1.0"
