"""Incidents: their lifecycle, monitoring groups, and the views read of them."""
