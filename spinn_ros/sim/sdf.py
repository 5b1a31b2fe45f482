"""``spinn export-world``: a seeded course as a Gazebo (gz-sim) SDF world.

The same obstacles (poses, sizes, colours) as :func:`world.generate_course` builds into
pybullet, a ground plane, and a quadrotor ``X3`` flying from the course's start with:

* the onboard camera of :data:`world.DRONE_CAMERA` (field of view, resolution, clip
  planes, the mount offset and the pitch below the nose), publishing ``/camera`` and
  ``/camera_info``;
* gz-sim's MulticopterVelocityControl on ``/X3/gazebo/command/twist`` (the drone node's
  command topic in a flight) and an OdometryPublisher on ``/model/X3/odometry``.

The airframe is an X3-sized quadrotor (1.5 kg) modelled inline, not PyFlyt's 27 g
Crazyflie, so the world needs nothing from Gazebo Fuel. config/gz_bridge.yaml bridges
these topics; launch/gz_flight.launch.py runs the world with the drone, cloud and monitor.
Pure text generation: no Gazebo (nor pybullet) needed to write the file.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from xml.sax.saxutils import escape

from .world import COURSE_KINDS, DRONE_CAMERA, CameraSpec, Course, Obstacle, generate_course

SDF_VERSION = "1.9"
MODEL = "X3"                       # robotNamespace: /X3/gazebo/command/twist, /model/X3/odometry
CAMERA_TOPIC = "camera"            # gz publishes /camera and /camera_info
DEFAULT_CAMERA_HZ = 15
#: X3-like rotors: (x, y) in the body frame, spin direction (+1 ccw, -1 cw)
ROTORS = (((0.13, -0.22), 1), ((-0.13, 0.20), 1), ((0.13, 0.22), -1), ((-0.13, -0.20), -1))
MOTOR_CONSTANT = 8.54858e-06
MOMENT_CONSTANT = 0.016


def _pose(x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0) -> str:
    return f"<pose>{x:.6g} {y:.6g} {z:.6g} {roll:.6g} {pitch:.6g} {yaw:.6g}</pose>"


def _color(rgba) -> str:
    text = " ".join(f"{c:.4g}" for c in rgba)
    return f"<material><ambient>{text}</ambient><diffuse>{text}</diffuse></material>"


def _geometry(o: Obstacle) -> str:
    if o.kind == "pillar":
        return f"<geometry><cylinder><radius>{o.size[0]:.6g}</radius><length>{o.height:.6g}</length></cylinder></geometry>"
    return f"<geometry><box><size>{o.size[0]:.6g} {o.size[1]:.6g} {o.size[2]:.6g}</size></box></geometry>"


def obstacle_model(index: int, o: Obstacle) -> str:
    """A static model where world.build_course places it (on the ground, or lifted by its base)."""
    geometry = _geometry(o)
    return f"""
    <model name="obstacle_{index:03d}">
      <static>true</static>
      {_pose(o.center[0], o.center[1], o.center_z, yaw=o.yaw)}
      <link name="link">
        <collision name="collision">{geometry}</collision>
        <visual name="visual">{geometry}{_color(o.color)}</visual>
      </link>
    </model>"""


def _box_inertia(mass: float, sx: float, sy: float, sz: float) -> str:
    i = (mass / 12 * (sy**2 + sz**2), mass / 12 * (sx**2 + sz**2), mass / 12 * (sx**2 + sy**2))
    return (f"<inertial><mass>{mass}</mass><inertia><ixx>{i[0]:.6g}</ixx><ixy>0</ixy><ixz>0</ixz>"
            f"<iyy>{i[1]:.6g}</iyy><iyz>0</iyz><izz>{i[2]:.6g}</izz></inertia></inertial>")


def _camera_sensor(camera: CameraSpec, rate_hz: int) -> str:
    """PyFlyt's camera: on the body at ``link_offset``, pitched ``angle_deg`` below the nose
    (SDF pitch about +y turns +x downward). gz's horizontal_fov is PyFlyt's fov widened by
    the aspect ratio (pybullet's fov is vertical)."""
    h, w = camera.resolution
    x, y, z = (a + b for a, b in zip(camera.link_offset, camera.position_offset))
    return f"""
        <sensor name="camera" type="camera">
          {_pose(x, y, z, pitch=math.radians(camera.angle_deg))}
          <always_on>true</always_on>
          <update_rate>{rate_hz}</update_rate>
          <topic>{CAMERA_TOPIC}</topic>
          <camera>
            <horizontal_fov>{math.radians(camera.horizontal_fov_deg):.6f}</horizontal_fov>
            <image><width>{w}</width><height>{h}</height><format>R8G8B8</format></image>
            <clip><near>{camera.near}</near><far>{camera.far}</far></clip>
          </camera>
        </sensor>"""


def _rotor(index: int, xy, direction: int) -> str:
    return f"""
    <link name="rotor_{index}">
      {_pose(xy[0], xy[1], 0.023)}
      {_box_inertia(0.005, 0.2, 0.02, 0.005)}
      <visual name="visual"><geometry><cylinder><radius>0.1</radius><length>0.005</length></cylinder></geometry>
        {_color((0.1, 0.1, 0.1, 1.0))}</visual>
    </link>
    <joint name="rotor_{index}_joint" type="revolute">
      <parent>base_link</parent><child>rotor_{index}</child>
      <axis><xyz>0 0 1</xyz><limit><lower>-1e16</lower><upper>1e16</upper></limit></axis>
    </joint>
    <plugin filename="gz-sim-multicopter-motor-model-system" name="gz::sim::systems::MulticopterMotorModel">
      <robotNamespace>{MODEL}</robotNamespace>
      <jointName>rotor_{index}_joint</jointName>
      <linkName>rotor_{index}</linkName>
      <turningDirection>{"ccw" if direction > 0 else "cw"}</turningDirection>
      <timeConstantUp>0.0125</timeConstantUp>
      <timeConstantDown>0.025</timeConstantDown>
      <maxRotVelocity>800.0</maxRotVelocity>
      <motorConstant>{MOTOR_CONSTANT}</motorConstant>
      <momentConstant>{MOMENT_CONSTANT}</momentConstant>
      <commandSubTopic>gazebo/command/motor_speed</commandSubTopic>
      <motorNumber>{index}</motorNumber>
      <rotorDragCoefficient>8.06428e-05</rotorDragCoefficient>
      <rollingMomentCoefficient>1e-06</rollingMomentCoefficient>
      <rotorVelocitySlowdownSim>10</rotorVelocitySlowdownSim>
      <motorType>velocity</motorType>
    </plugin>"""


def drone_model(start, camera: CameraSpec, camera_hz: int) -> str:
    rotors = "".join(_rotor(i, xy, d) for i, (xy, d) in enumerate(ROTORS))
    config = "".join(f"""
          <rotor><jointName>rotor_{i}_joint</jointName><forceConstant>{MOTOR_CONSTANT}</forceConstant>
            <momentConstant>{MOMENT_CONSTANT}</momentConstant><direction>{d}</direction></rotor>"""
                     for i, (_, d) in enumerate(ROTORS))
    return f"""
    <model name="{MODEL}">
      {_pose(*start)}
      <link name="base_link">
        <inertial><mass>1.5</mass><inertia><ixx>0.0347563</ixx><ixy>0</ixy><ixz>0</ixz>
          <iyy>0.07</iyy><iyz>0</iyz><izz>0.0977</izz></inertia></inertial>
        <collision name="collision"><geometry><box><size>0.47 0.47 0.11</size></box></geometry></collision>
        <visual name="visual"><geometry><box><size>0.3 0.3 0.08</size></box></geometry>
          {_color((0.2, 0.2, 0.25, 1.0))}</visual>{_camera_sensor(camera, camera_hz)}
      </link>{rotors}
    <plugin filename="gz-sim-multicopter-control-system" name="gz::sim::systems::MulticopterVelocityControl">
      <robotNamespace>{MODEL}</robotNamespace>
      <commandSubTopic>gazebo/command/twist</commandSubTopic>
      <enableSubTopic>enable</enableSubTopic>
      <comLinkName>base_link</comLinkName>
      <velocityGain>2.7 2.7 2.7</velocityGain>
      <attitudeGain>2 3 0.15</attitudeGain>
      <angularRateGain>0.4 0.52 0.18</angularRateGain>
      <maximumLinearAcceleration>2 2 2</maximumLinearAcceleration>
      <rotorConfiguration>{config}
      </rotorConfiguration>
    </plugin>
    <plugin filename="gz-sim-odometry-publisher-system" name="gz::sim::systems::OdometryPublisher">
      <dimensions>3</dimensions>
      <odom_frame>{MODEL}/odom</odom_frame>
      <robot_base_frame>{MODEL}/base_footprint</robot_base_frame>
    </plugin>
    </model>"""


def course_sdf(course: Course, camera: CameraSpec = DRONE_CAMERA, camera_hz: int = DEFAULT_CAMERA_HZ) -> str:
    """The whole world as SDF text."""
    obstacles = "".join(obstacle_model(i, o) for i, o in enumerate(course.obstacles))
    name = escape(f"spinn_{course.kind}_{course.seed}")
    return f"""<?xml version="1.0"?>
<!-- spinn_ros course {course.kind} seed {course.seed}: {len(course.obstacles)} obstacles,
     start {course.start}, goal {course.goal}. Written by `spinn export-world`; run with
     `ros2 launch spinn_ros gz_flight.launch.py course_seed:={course.seed} course_kind:={course.kind}`. -->
<sdf version="{SDF_VERSION}">
  <world name="{name}">
    <physics name="4ms" type="ignored"><max_step_size>0.004</max_step_size><real_time_factor>1.0</real_time_factor></physics>
    <plugin filename="gz-sim-physics-system" name="gz::sim::systems::Physics"/>
    <plugin filename="gz-sim-user-commands-system" name="gz::sim::systems::UserCommands"/>
    <plugin filename="gz-sim-scene-broadcaster-system" name="gz::sim::systems::SceneBroadcaster"/>
    <plugin filename="gz-sim-sensors-system" name="gz::sim::systems::Sensors"><render_engine>ogre2</render_engine></plugin>
    <light type="directional" name="sun">
      <cast_shadows>false</cast_shadows>
      {_pose(0, 0, 10)}
      <diffuse>0.8 0.8 0.8 1</diffuse><specular>0.1 0.1 0.1 1</specular>
      <direction>0.5 -0.3 -1.0</direction>
    </light>
    <model name="ground_plane">
      <static>true</static>
      <link name="link">
        <collision name="collision"><geometry><plane><normal>0 0 1</normal><size>100 100</size></plane></geometry></collision>
        <visual name="visual"><geometry><plane><normal>0 0 1</normal><size>100 100</size></plane></geometry>
          {_color((0.55, 0.55, 0.55, 1.0))}</visual>
      </link>
    </model>{obstacles}{drone_model(course.start, camera, camera_hz)}
  </world>
</sdf>
"""


def write_world(path: Path, course: Course, camera_hz: int = DEFAULT_CAMERA_HZ) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(course_sdf(course, camera_hz=camera_hz))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spinn export-world", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="course seed (as spinn fly --seed)")
    ap.add_argument("--kind", choices=COURSE_KINDS, default=None, help="course kind (default: drawn from the seed)")
    ap.add_argument("--camera-hz", type=int, default=DEFAULT_CAMERA_HZ, help="camera update rate")
    ap.add_argument("--out", type=Path, default=None, help="SDF file to write (default: spinn_<kind>_<seed>.sdf)")
    opts = ap.parse_args(argv)
    if opts.seed < 0:
        ap.error(f"--seed must be >= 0, got {opts.seed}")
    if opts.camera_hz <= 0:
        ap.error(f"--camera-hz must be > 0, got {opts.camera_hz}")
    course = generate_course(opts.seed, opts.kind)
    out = opts.out or Path(f"spinn_{course.kind}_{course.seed}.sdf")
    write_world(out, course, opts.camera_hz)
    print(f"wrote {out}: {course.kind} course seed {course.seed}, {len(course.obstacles)} obstacles", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
