"""Thin rclpy adapters shared by the nodes (parameters, QoS, diagnostics, images, main loop)."""
