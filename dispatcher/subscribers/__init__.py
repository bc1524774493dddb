"""Subscribers: their records, preferences, confirmations and opt-outs."""
