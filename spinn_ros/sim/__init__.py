"""Simulation: procedural obstacle worlds, the drone camera, labelled datasets (pybullet)."""
