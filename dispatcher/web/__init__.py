"""The HTTP API: webhooks, subscriber API, preference centre, status page, callbacks."""
