"""Reports from the store: compliance evidence per framework and control (docs/compliance.md)."""
