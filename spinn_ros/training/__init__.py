"""Training, calibration and evaluation of the early-exit network (torch, no ROS)."""
