"""`compress search`: the cheapest variant that passes the gate, found with Optuna on the tuning split
and confirmed on held-out (space.py: the recipe's search section; study.py: the trials; report.py:
the front, search-result.yaml and the report)."""
