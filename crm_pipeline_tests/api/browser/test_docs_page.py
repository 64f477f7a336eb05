"""The API docs (`/docs`) render Swagger UI in a real headless Chromium from the package alone:
no request leaves 127.0.0.1, and the page's CSP is not violated."""

from __future__ import annotations


def test_the_docs_render_swagger_ui_with_no_request_beyond_localhost(tab, api):
    page = tab.page
    page.goto(api.url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "crm-pipeline API" in page.text_content(".swagger-ui .info .title")
    page.wait_for_selector(".opblock")
    operations = page.locator(".opblock-summary-path").all_text_contents()
    assert "/api/analytics/summary" in operations
    assert len(operations) >= 10
    assert page.is_visible(".swagger-ui .auth-wrapper .authorize")  # where a key is entered

    assert tab.foreign == []
    assert all(r.url.startswith(api.url) for r in tab.requests), [r.url for r in tab.requests]
    assert any(r.url.endswith("/openapi.json") for r in tab.requests)
    assert tab.errors == []  # no script error, no CSP violation


def test_try_it_out_calls_the_api_with_the_authorized_key(tab, api):
    page = tab.page
    page.goto(api.url + "/docs")
    page.click(".swagger-ui .auth-wrapper .authorize")
    page.fill(".modal-ux input", api.key)
    page.click(".modal-ux .auth-btn-wrapper button.authorize")
    page.click(".modal-ux .auth-btn-wrapper button.btn-done")
    operation = page.locator(".opblock", has_text="/api/analytics/summary")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.text_content().strip() == "200"
    call = next(r for r in tab.requests if r.url.endswith("/api/analytics/summary"))
    assert call.all_headers()["authorization"] == f"Bearer {api.key}"
    assert tab.foreign == [] and tab.errors == []
