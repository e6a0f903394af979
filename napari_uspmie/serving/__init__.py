"""Serving the enhancer from other applications (MONAI Label); modules here import their host only when used."""
