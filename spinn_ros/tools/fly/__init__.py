"""``spinn fly``: one closed-loop flight of a course, with a summary, a plot and a recording.

Brings up the ``flight`` system of ``launch_spec`` (simulator, drone node, cloud node and,
when the package has one, the monitor) as child processes in one fresh ROS domain, waits
for discovery, flies one episode and then stops every node cleanly (also on Ctrl-C).
While it flies it prints one progress line about once a second; at the end it prints a
summary and writes, under ``--out``:

  summary.json     outcome, frames, where they were answered, control latency, command
                   gaps, plan changes, link events, node exit codes
  timeline.json    per frame and per command: arrival times (wall, from take-off), stamps
  flight.png       top-down trajectory over the obstacles, coloured by where each frame
                   was answered; collisions, plan changes and link changes marked
  recording/       the flight's topics as a rosbag2 with MCAP storage (camera at 5 Hz)
  nodes.log        every node's output

Link traces (``--trace outage|degrade|flapping|FILE.yaml``) need root: the cloud node then
runs in its own network namespace behind an emulated veth link (spinn_ros.linkemu) and
everything else (simulator, drone, monitor and this process's ROS node) in the drone's
namespace, so only drone<->cloud traffic (Zenoh) crosses the emulated link while DDS
stays on the drone side's loopback. ``--trace none`` runs everything on this host's
loopback and works without root.

Control latency: for each camera frame, the wall time from the image's arrival in this
process to the arrival of the first command stamped with it (both over DDS to the same
process, so transport to the drone and back is included once each way).

Modules: ``cli`` (options, main), ``flight`` (the run), ``listener`` (what this process
hears), ``recording`` (rosbag2), ``stress`` (CPU hogs, drone stalls), ``traces`` (link
traces), ``analysis`` (summary and timeline), ``report`` (table and plot).
"""
