"""ROS-free install of the pure core, the Zenoh cloud server and the `spinn` tool.

    pip install .            # core + tools (a cloud server needs no ROS)
    pip install .[sim]       # + the PyFlyt simulator and plotting

ROS builds use CMakeLists.txt (colcon, ament_cmake) instead; see README.
"""
from setuptools import find_packages, setup

setup(
    name="spinn_ros",
    version="0.1.0",
    description="SPINN progressive inference (early exits, drone/cloud split over Zenoh) for drone obstacle avoidance",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["spinn_ros", "spinn_ros.*"]),
    package_data={"spinn_ros": ["models/*.pt", "models/*.json", "models/*.md"]},
    install_requires=[
        "numpy>=1.24,<2",
        "torch>=2.1",
        "eclipse-zenoh>=1.0,<2",
        "lz4>=4",
        "zstandard>=0.22",
        "PyYAML>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        "sim": ["PyFlyt==0.29.0", "pybullet>=3.2.6", "matplotlib>=3.7"],
        # the onnxruntime backend and spinn export (a Jetson installs JetPack's GPU onnxruntime instead)
        "onnx": ["onnx>=1.16", "onnxruntime>=1.16"],
    },
    entry_points={"console_scripts": ["spinn=spinn_ros.cli:main"]},
)
