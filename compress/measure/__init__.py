"""Measurement: accuracy and paired statistics, overlap, drift and corruptions, timing, memory,
energy and cost. None of it knows which steps made the model it measures."""
