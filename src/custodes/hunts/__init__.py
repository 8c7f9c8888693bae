"""Scheduled hunts: Sigma rules run over a time window of a SIEM index or CloudTrail, on a cron schedule."""
