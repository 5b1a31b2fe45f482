"""sensor_msgs/Image -> pixels without copying (cv_bridge only for other encodings)."""
from __future__ import annotations

import numpy as np

from ..core.preprocess import IMAGE_ENCODINGS, UnsupportedImage, pixels_from_buffer

try:  # a ROS install may have cv_bridge: it widens the accepted encodings
    from cv_bridge import CvBridge  # type: ignore
    _BRIDGE = CvBridge()
except Exception:  # noqa: BLE001 - absent from the PyPI wheels; any import failure means "no bridge"
    _BRIDGE = None


def image_pixels(msg) -> tuple[np.ndarray, str]:
    """(HxWxC uint8 view, encoding) for an Image; UnsupportedImage when it cannot be used."""
    if msg.encoding in IMAGE_ENCODINGS:
        return pixels_from_buffer(msg.data, msg.height, msg.width, msg.step, msg.encoding), msg.encoding
    if _BRIDGE is not None:
        try:
            return _BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"), "rgb8"
        except Exception as exc:  # noqa: BLE001 - cv_bridge raises several types
            raise UnsupportedImage(f"cv_bridge cannot convert {msg.encoding!r} to rgb8: {exc}") from exc
    raise UnsupportedImage(f"unsupported encoding {msg.encoding!r}; accepted: {', '.join(IMAGE_ENCODINGS)}")


def fill_image(msg, pixels: np.ndarray, encoding: str) -> None:
    """Fill an Image from HxWxC uint8 pixels (tobytes is the fast path into rclpy)."""
    h, w, c = pixels.shape
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = 0
    msg.step = w * c
    msg.data = np.ascontiguousarray(pixels).tobytes()
