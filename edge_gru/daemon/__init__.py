"""The MQTT forecasting daemon (``edge-gru serve``), one concern per module.

``config`` (TOML + environment), ``payload`` (wire formats), ``worker`` (queue, batches,
pool), ``stats``, ``mqttclient`` (paho), ``checkpoint``, ``notify`` (systemd), ``logs``,
``discovery`` (Home Assistant) and ``service`` (wiring and signals). Importing this
package imports none of them, so the simulator can use ``payload`` and ``worker`` without
paho installed.
"""
