"""
What the service feeds: the HTTP endpoints and dashboard, MQTT, and the
Mackerel metric lines.
"""
