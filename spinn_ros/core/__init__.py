"""The pure core: imports neither rclpy nor zenoh (checked by test_core_purity)."""
