"""The gate: what happens at the door once the core has decided.

:class:`~firmware_py.gate.controller.GateController` is the
:class:`~firmware_py.decision.ports.DecisionSink` that turns an accept into
direction -> durable punch -> door + feedback, applies the card policies,
and shows every reject.  :class:`~firmware_py.compose.gate_edge.GateEdge` builds it
and the hardware from the config.
"""
