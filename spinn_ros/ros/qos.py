"""QoS profiles, named once: camera input like image_pipeline, plans like latched topics."""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

#: camera frames: best effort, keep last 5 (rclpy's sensor-data profile)
SENSOR = qos_profile_sensor_data

#: results and commands: reliable, shallow
RESULTS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)

#: split plans and link state: the latest value reaches late joiners
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
