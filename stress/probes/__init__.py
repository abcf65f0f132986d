"""Compositor probes: screenshots, decoding the outputs, and a display round trip."""
