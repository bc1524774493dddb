"""Monitoring sources: one module per source, each turning a payload into an IncidentEvent."""
