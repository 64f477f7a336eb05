import orjson

from crm_pipeline.facebook.transforms import flatten_lead, lead_count


def test_lead_count_prefers_the_lead_total():
    actions = [
        {"action_type": "link_click", "value": "7"},
        {"action_type": "onsite_conversion.lead_grouped", "value": "2"},
        {"action_type": "lead", "value": "3"},
    ]
    assert lead_count(orjson.dumps(actions).decode()) == 3
    assert lead_count(orjson.dumps(actions[:2]).decode()) == 2
    assert lead_count(None) == 0
    assert lead_count("[]") == 0


def test_flatten_lead_lifts_contact_fields_and_keeps_field_data():
    field_data = [
        {"name": "email", "values": ["ana@example.com"]},
        {"name": "first_name", "values": ["Ana"]},
        {"name": "last_name", "values": ["Alvarez"]},
        {"name": "phone_number", "values": ["+15550001"]},
        {"name": "which_plan?", "values": ["gold"]},
    ]
    row = {
        "id": "9",
        "form_id": "f",
        "created_time": "2026-11-20T10:00:00+0000",
        "field_data": orjson.dumps(field_data).decode(),
    }
    flat = flatten_lead(row)
    assert (flat["email"], flat["phone"], flat["full_name"]) == (
        "ana@example.com",
        "+15550001",
        "Ana Alvarez",
    )
    assert orjson.loads(flat["field_data"]) == field_data
    assert flatten_lead({"id": "x", "field_data": None})["email"] is None
