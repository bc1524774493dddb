"""Who hears of an update, when, and how often: audience, pacing, quiet hours, promises."""
