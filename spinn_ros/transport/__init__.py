"""Adapters that carry offloaded tensors between drone and cloud (Zenoh)."""
