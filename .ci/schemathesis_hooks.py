"""Schemathesis extensions for CareForAll's API contract check (.ci/schemathesis).

`shape_accepted` replaces schemathesis's `positive_data_acceptance`: a request the document
allows must never be refused for its *shape* (`validation_error`, `malformed_json`,
`unsupported_media_type`, `payload_too_large`). It may still be refused for the state it
meets, with the stable code that says so: a random `campaign_id` names no campaign
(`campaign_not_found`), a donation already `FAILED` cannot become `FAILED` again
(`invalid_transition`). No JSON schema can promise those, so they are counted, not failed.
"""

import json

import schemathesis

SHAPE_CODES = {
    "validation_error",
    "malformed_json",
    "unsupported_media_type",
    "payload_too_large",
}


@schemathesis.check
def shape_accepted(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 413, 415, 422):
        return None
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        code = None
    if code in SHAPE_CODES or code is None:
        raise AssertionError(
            f"a request the document allows was refused for its shape: "
            f"{response.status_code} {code}: {response.content[:300]!r}"
        )
    return None
