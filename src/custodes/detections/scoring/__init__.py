"""Behaviour scoring: identity resolution, daily features, baselines, risk and explanations (docs/scoring.md)."""
