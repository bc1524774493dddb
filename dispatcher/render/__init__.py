"""Updates rendered into each channel's messages: views, templates, calendar, text fitting."""
