"""The bridge's Prometheus metrics, on a registry of its own (so several bridges in one
process, as in tests, do not collide). ``serve`` exposes them over HTTP."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["BridgeMetrics"]


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter("vigil_bridge_mqtt_messages", "MQTT events messages received", registry=r)
        self.events_in = Counter("vigil_bridge_events_in", "valid events received", registry=r)
        self.committed = Counter("vigil_bridge_records_committed",
                                 "records the log acknowledged (acks=all)", ["topic"], registry=r)
        self.rejected = Counter("vigil_bridge_rejected", "refused payloads or events, by reason",
                                ["reason"], registry=r)
        self.skewed = Counter("vigil_bridge_clock_skewed", "events flagged for clock skew", registry=r)
        self.delivery_errors = Counter("vigil_bridge_delivery_errors", "failed deliveries (retried)",
                                       ["error"], registry=r)
        self.duplicate_messages = Counter("vigil_bridge_duplicate_messages",
                                          "messages whose seqs the device had all been acked already "
                                          "(resent copies: written again, consumers drop them)", registry=r)
        self.device_acks = Counter("vigil_bridge_device_acks", "acks published to devices", registry=r)
        self.in_flight = Gauge("vigil_bridge_in_flight_messages",
                               "MQTT messages received and not yet acknowledged", registry=r)
        self.backlog = Gauge("vigil_bridge_backlog_records",
                             "records waiting for room in the producer queue", registry=r)
        self.ack_latency = Histogram("vigil_bridge_ack_latency_seconds",
                                     "from MQTT receive to the message's records all committed",
                                     buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
                                     registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
