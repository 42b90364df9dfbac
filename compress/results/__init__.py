"""results.json and what reads it without measuring: the schema, the gate, compare, CI formats."""
