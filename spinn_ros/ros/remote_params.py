"""Another node's parameters, read from that node itself: fetched through its parameter services
once they answer, then followed on /parameter_events. The monitor plans for the drone's own
settings this way instead of keeping copies of them."""
from __future__ import annotations

from typing import Callable

from rcl_interfaces.msg import ParameterEvent
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient

#: how often to look for the remote node until its parameter services answer
FETCH_PERIOD_S = 1.0


class RemoteParameters:
    """``names`` of node ``remote`` (resolved like any node name: relative to ``node``'s namespace);
    ``on_change(values)`` gets the fetched values once, then every change of them, from the
    executor's thread."""

    def __init__(self, node: Node, remote: str, names: list[str], on_change: Callable[[dict], None]):
        self.node, self.names, self.on_change = node, list(names), on_change
        self.client = AsyncParameterClient(node, remote)
        self.fqn = node.resolve_service_name(remote)      # e.g. /ns/spinn_drone: what events name
        self.fetched = False
        self._pending = None
        self._events = self.client.on_parameter_event(self._on_event)
        self._timer = node.create_timer(FETCH_PERIOD_S, self._fetch)
        self._fetch()

    def _fetch(self) -> None:
        if self.fetched or self._pending is not None or not self.client.services_are_ready():
            return
        self._pending = self.client.get_parameters(self.names)
        self._pending.add_done_callback(self._on_fetched)

    def _on_fetched(self, future) -> None:
        self._pending = None
        response = future.result() if future.exception() is None else None
        if response is None or len(response.values) != len(self.names):
            return                                     # the next timer tick asks again
        values = {n: parameter_value_to_python(v) for n, v in zip(self.names, response.values)}
        self.fetched = True
        self._timer.cancel()
        self.on_change({n: v for n, v in values.items() if v is not None})

    def _on_event(self, event: ParameterEvent) -> None:
        if event.node != self.fqn:
            return
        changed = {p.name: parameter_value_to_python(p.value) for p in (*event.new_parameters,
                                                                         *event.changed_parameters)
                   if p.name in self.names}
        if changed:
            self.on_change(changed)
