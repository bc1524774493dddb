"""The root of every error a user can cause: an operator at the CLI, a client of the API, a
subscriber on a page.

The CLI turns any of them into one red line and exit code 2 (`dispatcher/cli/common.py`), the API
into `{"detail": message}` with the class's HTTP status (`dispatcher/web/app.py`). Neither keeps a
list of classes: deriving a new error from `OutageError` is what maps it.

Our user errors, with the HTTP status each answers with and where each is defined (beside the
code that raises it):

* OutageError              422  errors.py
  x IncidentError          409  incidents/lifecycle.py: a change the state machine refuses
    + IncidentNotFound     404  incidents/lifecycle.py
  x SubscriberError        422  subscribers/records.py: a subscriber that cannot be stored
  x SubscriberNotFound     404  subscribers/preferences.py
  x ConfirmationError      410  subscribers/confirmations.py: the subscriber or address is gone
  x NoConfirmedAddress     409  subscribers/new_link.py: nowhere to send a new link to
  x LinkError              403  links.py: forged, or for another page; 410 when expired
    + LinkRevoked          410  links.py: signed out since (a new link was sent)
  x QuietHoursError        422  policy/quiet_hours.py: quiet hours that cannot be read
  x ScopeError             422  policy/scope.py: a key=value (--affects, --attr) that cannot be read
  x DeliveryError          422  delivery/operations.py: a retry that cannot be done
  x UnknownChannel         422  delivery/registry.py: no adapter installed by that name
  x DurationError          422  durations.py: neither a duration (30m) nor a time
  x RenderError            422  render/templates.py: this update cannot become this message
    + TemplateMissing      422  render/templates.py
  x SchemaMismatch         503  migrations/__init__.py: the database needs `outage db upgrade`

A message is written for the person who made the mistake, and starts with the field or option at
fault when there is one ("channels: ...", "--eta: ..."). A provider's failure is not a user error:
it is a `channels.base.ChannelError`, classified transient or permanent by its adapter, and it
becomes a delivery's outcome, never an answer to a user.
"""

from __future__ import annotations


class OutageError(Exception):
    """Something a user asked for that cannot be done as asked; the message says why.

    `http_status` is the API's answer. A subclass sets its own; an instance may set it too, when
    one class covers two answers (an expired link is 410, a forged one 403).
    """

    http_status: int = 422
