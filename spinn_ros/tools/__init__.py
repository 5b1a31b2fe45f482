"""The ``spinn`` commands and what only they use: the flight tool, profile measurement, the
demo, the launcher and its specs, certificates, the ONNX export. Nothing on a drone or a
server imports this package (the nodes and the cloud service are below it)."""
