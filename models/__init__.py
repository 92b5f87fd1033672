"""Keras/NumPy models, weight loading and the model registry (no Flask here)."""
