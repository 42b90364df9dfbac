"""results.json -> report.md and its plots. Pure functions of the results."""
