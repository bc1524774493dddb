"""The engine that turns an update into sent messages: fan-out, send, sweep, queue, guards."""
