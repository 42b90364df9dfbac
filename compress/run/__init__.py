"""One run of a recipe, in stages: build (through the cache), evaluate, profile, gate, write."""
