"""outage-dispatcher: the core pipeline from incident update to delivered message."""
