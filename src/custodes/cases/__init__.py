"""Cases: investigations about one person (or incident) grouping findings, runs, evidence and scores, with a
timeline, comments, need-to-know access, legal hold and analyst feedback (docs/cases.md)."""
