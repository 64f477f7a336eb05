"""FB_PAGE_IDS beside FB_PAGE_ID: several pages, validated like one, the union when both are set."""

import pytest

from crm_pipeline.config import ConfigError, load_settings

PRODUCTION = {
    "CRM_ENV": "production",
    "CRM_DATABASE_URL": "postgresql://crm:pw@db.internal:5432/crm",
    "FB_ACCESS_TOKEN": "EAAGsecretTOKENvalue123",
    "FB_APP_SECRET": "a-real-app-secret",
    "FB_WEBHOOK_VERIFY_TOKEN": "a-real-verify-token",
    "FB_AD_ACCOUNT_IDS": "act_1",
    "CRM_MASK_KEY": "a-real-mask-key",
}


def test_page_ids_are_parsed_in_order_once_each():
    settings = load_settings({"FB_PAGE_IDS": " 3001, 2001,,3001 "})
    assert settings.page_ids == ("3001", "2001")
    assert settings.page_id is None
    assert settings.all_page_ids == ("3001", "2001")


def test_both_variables_give_the_union_with_fb_page_id_first():
    settings = load_settings({"FB_PAGE_ID": "2001", "FB_PAGE_IDS": "3001,2001,4001"})
    assert settings.all_page_ids == ("2001", "3001", "4001")
    assert load_settings({"FB_PAGE_ID": "2001"}).all_page_ids == ("2001",)
    assert load_settings({}).all_page_ids == ()


@pytest.mark.parametrize("raw", ["2001,my-page", "act_2001", "2001;3001"])
def test_a_page_id_that_is_not_numeric_is_refused_naming_the_variable(raw):
    with pytest.raises(ConfigError, match="FB_PAGE_IDS") as info:
        load_settings({"FB_PAGE_IDS": raw})
    assert "FB_PAGE_IDS has an entry that is not a numeric page id" in str(info.value)


def test_production_needs_a_page_from_either_variable():
    missing = load_settings(PRODUCTION).production_problems()
    assert missing and "FB_PAGE_ID or FB_PAGE_IDS" in missing[0]
    assert load_settings({**PRODUCTION, "FB_PAGE_IDS": "2001,3001"}).production_problems() == []
    assert load_settings({**PRODUCTION, "FB_PAGE_ID": "2001"}).production_problems() == []


def test_the_configuration_table_documents_fb_page_ids():
    from crm_pipeline.config import configuration_table

    row = next(line for line in configuration_table().splitlines() if "`FB_PAGE_IDS`" in line)
    assert "union" in row
