"""The public sign-up form's bot check: no third-party service, no JavaScript, no cookie.

Two things a person does not do and a form-filling script does:

- fill a field they cannot see: the form has a honeypot (`HONEYPOT`), off screen, out of the
  tab order and hidden from screen readers, which must come back empty;
- send the form moments after it was shown: the form carries a timestamp signed with the
  instance's secret key (itsdangerous, `FIELD`), which must be at least OUTAGE_SIGNUP_MIN_FILL_S
  old (3 s) and at most a day. A script that posts without loading the page has no stamp, and
  cannot make one.

A form that fails comes back filled in, with a new stamp and one sentence; it never says which
check failed, so a script learns nothing from the answer. The JSON API has no form to check:
the throttle (dispatcher/subscribers/throttle.py) bounds what a script can make us send there.
"""

from __future__ import annotations

import time
from typing import Final

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

from dispatcher.web.forms import Form

FIELD: Final = "form_stamp"
HONEYPOT: Final = "website"
MAX_AGE_S: Final = 86_400
_SALT: Final = "outage-dispatcher.signup-form"
_VALUE: Final = b"signup"
REFUSED: Final = "Please send the form again: it was sent too quickly, or from an old page."


def stamp(secret_key: str) -> str:
    """A new stamp for a form shown now."""
    return TimestampSigner(secret_key, salt=_SALT).sign(_VALUE).decode()


def passes(form: Form, secret_key: str, min_fill_s: float) -> bool:
    """Whether a person could have sent this form: the honeypot empty, and a stamp of ours
    between `min_fill_s` seconds and a day old."""
    if form.get(HONEYPOT):
        return False
    signer = TimestampSigner(secret_key, salt=_SALT)
    try:
        value, signed_at = signer.unsign(form.get(FIELD), max_age=MAX_AGE_S, return_timestamp=True)
    except (BadSignature, SignatureExpired):
        return False
    return value == _VALUE and time.time() - signed_at.timestamp() >= min_fill_s
