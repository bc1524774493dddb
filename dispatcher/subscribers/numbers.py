"""Which phone numbers we text: a person's mobile, in a country this dispatcher serves.

SMS pumping (toll fraud) signs up numbers whose operator pays the sender's carrier for every
text: premium-rate and shared-cost ranges, and whole countries with high termination fees. Each
confirmation text to such a number is money out of the company's provider account. So a number
that asks for texts must be, by phonenumbers' own number plan (`number_type`):

- MOBILE, or FIXED_LINE_OR_MOBILE (plans such as the US's do not tell the two apart), and
- in `OUTAGE_SMS_COUNTRIES` (the country its number plan says, not the one its owner says).

An operator who vouches for a number (`--confirmed`, `"confirmed": true`, the import's
`confirmed` column: they know it is the customer's, and no confirmation text is sent) may add a
landline, a VoIP or a toll-free number, or one from any country: a key account's office line is
legitimate. Numbers that cost to reach or reach no one in particular (premium rate, shared cost,
UAN, personal/forwarding, pager, voicemail, a type the plan cannot tell) are refused for everyone.
"""

from __future__ import annotations

from collections.abc import Collection

import phonenumbers
from phonenumbers import PhoneNumberType

# What a person signing themselves up may give.
PERSONAL = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
# What an operator who vouches for the number may add as well.
VOUCHED = PERSONAL | {PhoneNumberType.FIXED_LINE, PhoneNumberType.VOIP, PhoneNumberType.TOLL_FREE}
# How each refused type is named to the person who typed it.
TYPE_NAMES = {
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.UAN: "a universal access number",
    PhoneNumberType.PERSONAL_NUMBER: "a personal forwarding number",
    PhoneNumberType.PAGER: "a pager number",
    PhoneNumberType.VOICEMAIL: "a voicemail number",
    PhoneNumberType.FIXED_LINE: "a landline number",
    PhoneNumberType.VOIP: "an internet (VoIP) number",
    PhoneNumberType.TOLL_FREE: "a toll-free number",
}


def refusal(phone: str, countries: Collection[str], *, vouched: bool) -> str | None:
    """Why we would not text `phone` (an E.164 number, as SubscriberIn leaves it), or None."""
    number = phonenumbers.parse(phone, None)
    kind = phonenumbers.number_type(number)
    if kind not in (VOUCHED if vouched else PERSONAL):
        what = TYPE_NAMES.get(kind, "a number whose type cannot be told")
        if kind in VOUCHED:
            return f"this is {what}; give a mobile number for text messages"
        return f"this is {what}, which we do not send text messages to"
    region = phonenumbers.region_code_for_number(number)
    if not vouched and region not in countries:
        return (
            f"we do not send text messages to numbers from {region} "
            f"(+{number.country_code}); use an email address instead"
        )
    return None
