"""ROS 2 nodes: drone (head + policy), cloud (tails over Zenoh), monitor (link + re-planning), sim."""
