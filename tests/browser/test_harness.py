"""The harness itself: a leak is seen and refused locally, errors are caught."""

from __future__ import annotations

import pytest

from .conftest import StartBrowser


async def test_direct_vendor_request_is_recorded_and_never_leaves(
    browser_run: StartBrowser,
) -> None:
    run = await browser_run()
    await run.open(
        "<script>fetch('https://plausible.io/api/event', {method: 'POST',"
        " mode: 'no-cors', body: '{}'}).catch(function () {"
        " document.title = 'refused'; });"
        "new Image().src = '//www.google-analytics.com/g/collect?v=2';</script>"
    )
    await run.page.wait_for_function("document.title === 'refused'")
    await run.settle()

    leaked = {r.url for r in run.offsite()}
    assert "https://plausible.io/api/event" in leaked
    assert "https://www.google-analytics.com/g/collect?v=2" in leaked
    with pytest.raises(AssertionError, match="off-site requests"):
        run.assert_only_first_party()
    # Mapped to 127.0.0.1:443, where nothing listens: the fake
    # vendor (and the internet) never saw them.
    assert run.vendor.received == []


async def test_page_errors_are_caught(browser_run: StartBrowser) -> None:
    run = await browser_run()
    await run.open("<script>window.undefinedThing.call();</script>")
    with pytest.raises(AssertionError, match="page error"):
        run.assert_no_errors()
