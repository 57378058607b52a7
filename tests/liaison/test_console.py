"""The liaison console in a real browser, against real services on the real broker.

Lithuania, Latvia and Poland each run a liaison service; Lithuania and Latvia
also run gateways, through which reports are published and through which
their officers' acknowledgements and answers go back. Headless Chromium
(Debian's, driven by Selenium) signs in as an officer and uses the page as
one would: nothing is read from the API behind the page's back except to
check what the other side received.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_browser import Browser, start_chromium
from liaison_support import (
    PASSWORD,
    SECTIONS,
    RunningGateway,
    RunningLiaison,
    liaison_settings,
    lt_incident,
    produce_raw,
    publish,
    publishers,
    report,
    running_gateway,
    running_liaison,
    signed_in,
)
from polling import eventually
from pydantic import SecretStr

from services.bus import (
    Exchange,
    LinkRelation,
    MessageLink,
    Report,
    SealedReport,
    Settings,
    ensure_topics,
    start_producer,
)
from services.gateway import Publisher, create_token
from services.liaison import add_officer

pytestmark = pytest.mark.timeout(60)

LT, LV, PL = "LT-VSAT", "LV-VRS", "PL-SG"
ALL_READERS = ["LV-VRS", "PL-SG", "EE-PPA", "UA-DPSU"]
REPO = Path(__file__).resolve().parents[2]
EE = "EE-PPA"
STORE_EVENTS = 10_000
PAGE, KEEP = 50, 500  # console.js: lines per page, lines kept in the page
PARTNER_ACK_S = 40.0  # a partner's acknowledgement crosses two gateways and the broker


@dataclass
class World:
    settings: Settings
    exchange: Exchange
    lt: RunningLiaison
    lv: RunningLiaison
    pl: RunningLiaison
    lt_gateway: RunningGateway
    lv_gateway: RunningGateway
    lt_system: httpx.AsyncClient
    lv_system: httpx.AsyncClient
    pub: dict[str, Publisher]
    browser: Browser


@pytest.fixture(scope="module")
async def world(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """Three agencies' services, two gateways, officers, and one browser, for the module."""
    tmp = tmp_path_factory.mktemp("console")
    settings = Settings(
        bootstrap=bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}",
        data_dir=tmp,
        agreement=REPO / "deploy" / "agreement.example.yaml",
        keys_dir=REPO / "deploy" / "keys",
        schemas_dir=REPO / "schemas",
        log_format="json",
    )
    exchange = Exchange.from_settings(settings)
    tokens = tmp / "tokens.yaml"
    lt_token = create_token(tokens, LT, "lt-system")
    lv_token = create_token(tokens, LV, "lv-system")
    officers = tmp / "officers.yaml"
    for agency, name in ((LT, "lina"), (LV, "liga"), (PL, "piotr")):
        add_officer(officers, agency, name, PASSWORD)
    driver = start_chromium()
    browser = Browser(driver)
    try:
        async with (
            running_gateway(settings, exchange, LT, tokens) as lt_gateway,
            running_gateway(settings, exchange, LV, tokens) as lv_gateway,
        ):

            def with_gateway(agency: str, gateway: RunningGateway, token: str) -> Any:
                return liaison_settings(
                    tmp, agency, gateway_url=gateway.url, gateway_token=SecretStr(token)
                )

            async with (
                running_liaison(settings, with_gateway(LT, lt_gateway, lt_token), exchange) as lt,
                running_liaison(settings, with_gateway(LV, lv_gateway, lv_token), exchange) as lv,
                running_liaison(settings, liaison_settings(tmp, PL), exchange) as pl,
                publishers(settings, exchange, [LT, PL]) as pub,
                httpx.AsyncClient(
                    base_url=lt_gateway.url, headers={"Authorization": f"Bearer {lt_token}"}
                ) as lt_system,
                httpx.AsyncClient(
                    base_url=lv_gateway.url, headers={"Authorization": f"Bearer {lv_token}"}
                ) as lv_system,
            ):
                yield World(
                    settings,
                    exchange,
                    lt,
                    lv,
                    pl,
                    lt_gateway,
                    lv_gateway,
                    lt_system,
                    lv_system,
                    pub,
                    browser,
                )
    finally:
        browser.close()


def key(item: Report) -> str:
    return f"{item.header.originator}/{item.header.event_id}"


def feed_item(item: Report) -> str:
    return f'#feed li[data-key="{key(item)}"]'


async def through_gateway(client: httpx.AsyncClient, item: Report) -> str:
    """Publish ``item`` through an agency's gateway over HTTP; its message id."""
    response = await client.post("/v1/reports", json=item.model_dump(mode="json"))
    assert response.status_code == 201, response.text
    return str(response.json()["message_id"])


async def test_an_officer_signs_in_and_a_report_arrives_without_reload(world: World) -> None:
    browser = world.browser
    await browser.open(f"{world.lv.url}/console/")
    await browser.call(browser.driver.delete_all_cookies)
    await browser.open(f"{world.lv.url}/console/")
    await browser.fill("#login-name", "liga")
    await browser.fill("#login-password", "not the password")
    await browser.click("#login-form button[type=submit]")
    assert "wrong name or password" in (await browser.text("#login-error", "wrong"))
    await browser.fill("#login-password", PASSWORD)
    await browser.click("#login-form button[type=submit]")
    await browser.find("#officer", "liga (LV-VRS)")
    await browser.find("#connection", "Live")
    await browser.js("window.notReloaded = true;")

    incident = lt_incident(ALL_READERS, impact="HIGH")
    await through_gateway(world.lt_system, incident)
    text = await browser.text(feed_item(incident))
    for shown in (LT, "IncidentReport", "Impact: HIGH", "LT-BY-DRUSKININKAI", "Signature valid"):
        assert shown in text, (shown, text)
    assert "EXERCISE" not in text
    assert "LATE" not in text
    assert await browser.js("return window.notReloaded === true;")

    # An exercise, and an incident first reported two days after its detection.
    drill = lt_incident(ALL_READERS, mode="EXERCISE")
    late = lt_incident(ALL_READERS)
    late = late.model_copy(update={"detected_at": datetime.now(UTC) - timedelta(days=2)})
    await publish(world.pub[LT], drill)
    await publish(world.pub[LT], late)
    assert await browser.text(f"{feed_item(drill)} .badge.EXERCISE") == "EXERCISE"
    assert "LATE" in (await browser.text(f"{feed_item(late)} .badge.late"))
    assert await browser.js("return window.notReloaded === true;")
    keys = await browser.js(
        "return [...document.querySelectorAll('#feed li')].map(li => li.dataset.key);"
    )
    # Newest first (the two last ones may arrive in either order: different partitions).
    assert set(keys[:2]) == {key(late), key(drill)}, keys
    assert keys[2] == key(incident), keys
    await browser.screenshot("feed")
    # Everything the page loaded came from the liaison service itself (no CDN: offline machines).
    loaded = await browser.js(
        "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)];"
    )
    assert len(loaded) > 3, loaded
    assert all(url.startswith(f"{world.lv.url}/") for url in loaded), loaded


async def test_filters_are_kept_in_the_url_and_apply_to_live_arrivals(world: World) -> None:
    browser = world.browser
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    lt_high = lt_incident(ALL_READERS, impact="HIGH")
    lt_low = lt_incident(ALL_READERS, impact="LOW")
    pl_high = report("02-lv-incident-ladders", originator=PL, releasable_to=[LV], impact="HIGH")
    for publisher, item in ((LT, lt_high), (LT, lt_low), (PL, pl_high)):
        await publish(world.pub[publisher], item)
    for item in (lt_high, lt_low, pl_high):
        await browser.find(feed_item(item))

    await browser.fill("#f-partner", LT)
    await browser.call((await browser.find("#f-impact")).send_keys, "HIGH")
    await browser.click("#filters button[type=submit]")
    await eventually(lambda: _url_has(browser, "partner=LT-VSAT", "impact=HIGH"), "the URL")
    await browser.find(feed_item(lt_high))
    shown = await browser.texts("#feed li")
    assert shown, "the filtered feed is not empty"
    assert all(LT in t and "Impact: HIGH" in t for t in shown), shown
    assert not await browser.js(f"return !!document.querySelector('{feed_item(lt_low)}');")

    # The URL alone gives a colleague the same view.
    shared_url = await browser.url
    await browser.open("about:blank")
    await browser.open(shared_url)
    await browser.find(feed_item(lt_high))
    assert await browser.js("return document.querySelector('#f-partner').value;") == LT
    assert await browser.js("return document.querySelector('#f-impact').value;") == "HIGH"

    # Live arrivals are filtered the same way.
    later_low = lt_incident(ALL_READERS, impact="LOW")
    later_high = lt_incident(ALL_READERS, impact="HIGH")
    await publish(world.pub[LT], later_low)
    await publish(world.pub[LT], later_high)
    await browser.find(feed_item(later_high))
    assert not await browser.js(f"return !!document.querySelector('{feed_item(later_low)}');")

    # Free text searches narratives too, also for live arrivals ("swam" is in no title).
    await browser.open(f"{world.lv.url}/console/?view=feed&q=swam")
    await browser.find("#feed-status", "shown")
    swimmers = lt_incident(ALL_READERS)
    ladders = report("02-lv-incident-ladders", originator=PL, releasable_to=[LV])
    await publish(world.pub[PL], ladders)
    views = world.lv.service.views
    ladders_id = str(ladders.header.message_id)
    await eventually(lambda: views.report(LV, PL, ladders_id), "the ladders stored at Latvia")
    # Streamed in the order stored: once the swimmers show, the ladders were judged.
    await publish(world.pub[LT], swimmers)
    await browser.find(feed_item(swimmers))
    assert "swam" not in (await browser.text(feed_item(swimmers))).lower()
    assert not await browser.js(f"return !!document.querySelector('{feed_item(ladders)}');")


async def _url_has(browser: Browser, *parts: str) -> bool:
    url = await browser.url
    return all(p in url for p in parts)


def _correction(original: Report, persons: int) -> Report:
    data = original.model_dump()
    data["header"]["message_id"] = uuid.uuid4()
    data["header"]["event_version"] = 2
    data["header"]["links"] = [
        MessageLink(message_id=original.header.message_id, relation=LinkRelation.SUPERSEDES)
    ]
    data["persons"]["total"] = persons
    return type(original).model_validate(data)


async def test_the_detail_shows_every_version_what_changed_and_acknowledges(
    world: World,
) -> None:
    browser = world.browser
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    original = lt_incident(ALL_READERS, impact="MEDIUM")
    correction = _correction(original, 9)
    original_id = await through_gateway(world.lt_system, original)
    correction_id = await through_gateway(world.lt_system, correction)
    await browser.find(f"{feed_item(original)}", "2 versions")
    await browser.click(f"{feed_item(original)} a")
    await browser.find("#event-title")
    assert "view=event" in await browser.url
    versions = await browser.texts("section.version")
    assert len(versions) == 2
    assert original_id in versions[0]
    assert correction_id in versions[1]
    assert "(superseded)" in versions[0]
    change = await browser.text("section.version table.changes tr.changed")
    assert change.split() == ["persons.total", "2", "9"]
    second = versions[1]
    assert "Signature valid (LT-VSAT-2026-1)" in second
    assert "LT-VSAT-2026-1" in second
    assert "54.0152° N, 23.9820° E" in second
    assert (
        await browser.js(
            "return document.querySelectorAll('section.version svg.map circle.point').length;"
        )
        == 2
    )
    # The map draws the agreement's border sections and marks the event's, the point on it.
    section = original.location.border_section
    drawn = await browser.js(
        "const map = document.querySelectorAll('section.version svg.map')[1];"
        "const marked = [...map.querySelectorAll('polyline.section.marked')];"
        "const point = map.querySelector('circle.point');"
        "const [px, py] = [Number(point.getAttribute('cx')), Number(point.getAttribute('cy'))];"
        "const v = [...marked[0].points];"
        "const near = Math.min(...v.slice(1).map((b, i) => {"
        "  const a = v[i], dx = b.x - a.x, dy = b.y - a.y;"
        "  const along = ((px - a.x) * dx + (py - a.y) * dy) / (dx * dx + dy * dy);"
        "  const t = Math.max(0, Math.min(1, along));"
        "  return Math.hypot(a.x + t * dx - px, a.y + t * dy - py); }));"
        "return {marked: marked.map(m => m.dataset.section), vertices: marked[0].points.length,"
        " others: map.querySelectorAll('polyline.section:not(.marked)').length,"
        " label: map.querySelector('text.section-label').textContent, near,"
        " caption: map.closest('figure').querySelector('figcaption').textContent};"
    )
    assert drawn["marked"] == [section], drawn
    assert drawn["vertices"] >= 2, drawn
    assert drawn["others"] >= 10, drawn
    assert drawn["label"] == section
    assert drawn["near"] < 15, "the point lies by its section's line (pixels of 300)"
    assert f"{section} outlined" in drawn["caption"]
    assert "approximate" in drawn["caption"]
    await browser.js(
        "document.querySelectorAll('section.version svg.map')[1].scrollIntoView({block: 'center'});"
    )
    await browser.screenshot("event-map")
    await browser.js("window.scrollTo(0, 0);")
    # The link to the version it supersedes leads to that report's event.
    await browser.find("section.version li a", "IncidentReport")
    related = await browser.js("return document.querySelector('section.version li a').href;")
    assert f"event={original.header.event_id}" in related
    await browser.screenshot("event-detail")

    await browser.click("#ack-read")
    await browser.find("#ack-result", "READ sent")
    await browser.find("#acks tbody tr", "READ")
    acks = await browser.texts("#acks tbody tr")
    assert any(t.split()[:3] == ["sent", LV, "READ"] for t in acks), acks

    async def at_lithuania() -> list[dict[str, Any]]:
        status = (await world.lt_system.get(f"/v1/reports/{correction_id}/status")).json()
        return [a for a in status.get("acknowledgements", []) if a["party"] == LV]

    [ack] = await eventually(at_lithuania, "Lithuania's gateway to show Latvia's ack")
    assert ack["status"] == "READ"


async def test_an_assistance_request_is_answered_and_the_answer_acknowledged(
    world: World,
) -> None:
    browser = world.browser
    request = report("03-lv-assistance-request")
    request_id = await through_gateway(world.lv_system, request)

    # Lithuania's officer finds it among the open requests and answers it.
    await browser.sign_in(world.lt.url, "lina", PASSWORD)
    await browser.click("#nav a[data-view=requests]")
    row = await browser.text(f'#requests tr[data-key="{key(request)}"]')
    assert "due in" in row
    await browser.click(f'#requests tr[data-key="{key(request)}"] a')
    await browser.find("#answer-form")
    await browser.call((await browser.find("#a-decision")).send_keys, "Partial")
    await browser.fill("#a-officers", "8")
    await browser.fill("#a-sp-BORDER_GUARD", "8")
    await browser.fill("#a-note", "Eight border guards; no cynologists to spare.")
    await browser.click("#answer-send")
    await browser.find("#answer-result", "Answer sent")
    assert await browser.text("#sent .answer-state", "sent") == "sent"
    answer_id = await browser.js("return document.querySelector('#sent tbody tr').dataset.message;")

    # Latvia's officer sees the answer arrive and acknowledges it.
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    answer_line = f'#feed li[data-key^="{LT}/"]'
    await browser.click(f"{answer_line} a", "AssistanceResponse")
    version = await browser.text("section.version", str(answer_id))
    assert "PARTIAL" in version
    assert "RESPONDS_TO" in version
    await browser.click("#ack-received")
    await browser.find("#ack-result", "RECEIVED sent")

    # Back at Lithuania, the answer shows as acknowledged by Latvia.
    await browser.sign_in(world.lt.url, "lina", PASSWORD)
    await browser.open(
        f"{world.lt.url}/console/?view=event&originator={LV}&event={request.header.event_id}"
    )
    await browser.find("#sent .answer-state", f"acknowledged by {LV} (RECEIVED)")
    assert request_id in (await browser.text("section.version"))


async def test_open_requests_count_down_and_overdue_ones_stand_out(world: World) -> None:
    browser = world.browser
    base = report("08-pl-request-for-information")

    def rfi(due: datetime) -> Report:
        data = base.model_dump()
        data["header"]["links"] = []
        data["header"]["message_id"] = uuid.uuid4()
        data["header"]["event_id"] = uuid.uuid4()
        data["header"]["created_at"] = datetime.now(UTC) - timedelta(hours=1)
        data["about_message_id"] = None
        data["due_at"] = due
        return type(base).model_validate(data)

    soon = rfi(datetime.now(UTC) + timedelta(hours=2))
    missed = rfi(datetime.now(UTC) - timedelta(minutes=5))
    await publish(world.pub[PL], soon)
    await publish(world.pub[PL], missed)
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    await browser.click("#nav a[data-view=requests]")
    late_css = f'#requests tr[data-key="{key(missed)}"]'
    late_row = await browser.text(late_css, "OVERDUE")
    assert "overdue by" in late_row
    assert await browser.js(f"return document.querySelector('{late_css}').className;") == "overdue"
    row_css = f'#requests tr[data-key="{key(soon)}"] .countdown'
    first = await browser.text(row_css, "due in")
    assert "due in 01:5" in first, first
    await eventually(
        lambda: _changed(browser, row_css, first),
        "the countdown to move",
    )
    await browser.screenshot("requests")

    # Answered with the request's form: the answer is all an officer must write.
    await browser.click(f'#requests tr[data-key="{key(soon)}"] a')
    await browser.find("#r-question", "ladders")
    await browser.fill("#r-answer", "The ladders were bought in Grodno; same make as in July.")
    await browser.click("#answer-send")
    await browser.find("#answer-result", "Answer sent")
    assert await browser.text("#sent .answer-state", "sent") == "sent"
    await browser.click("#nav a[data-view=requests]")
    await browser.find(f'#requests tr[data-key="{key(missed)}"]')
    answered = f'#requests tr[data-key="{key(soon)}"]'
    assert not await browser.js(f"return !!document.querySelector('{answered}');"), "answered"


@pytest.mark.timeout(90)  # two officers, three gateway round trips and a partner's ack
async def test_an_rfi_is_answered_in_its_form_with_field_errors_and_acknowledged(
    world: World,
) -> None:
    browser = world.browser
    rfi = report("08-pl-request-for-information", originator=LT, releasable_to=[LV])
    rfi = rfi.model_copy(update={"about_message_id": None})
    await through_gateway(world.lt_system, rfi)

    # Latvia's officer answers it from the keyboard; the service's refusals show by the field.
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    await browser.click("#nav a[data-view=requests]")
    await browser.click(f'#requests tr[data-key="{key(rfi)}"] a')
    assert "same make" in await browser.text("#r-question")
    assert await browser.js("return document.querySelector('#r-section').value;") in SECTIONS[LV]
    await browser.click("#answer-send")
    assert await browser.text("#r-answer-error") == "write the answer"
    assert (await browser.focused())["id"] == "r-answer"
    await browser.keys("Seen at Silene on 12 August: the same make as in July.")
    await browser.fill("#r-persons", "-2")
    await browser.click("#answer-send")
    persons = await browser.text("#r-persons-error")
    assert persons, "the refusal of persons.total is shown beside the field"
    assert (await browser.focused())["id"] == "r-persons"
    assert await browser.js("return document.querySelector('#r-persons').ariaInvalid;") == "true"
    assert await browser.js("return document.querySelector('#r-answer-error').textContent;") == ""
    assert await browser.js("return document.querySelector('#r-persons-error').id;") in (
        await browser.js(
            "return document.querySelector('#r-persons').getAttribute('aria-describedby');"
        )
    )
    await browser.keys("\ue009a\ue000", "3")  # Ctrl+A (released), then the right figure
    await browser.fill("#r-section", SECTIONS[LT][0])
    await browser.click("#answer-send")
    assert await browser.text("#r-section-error"), "a section not Latvia's is refused by the field"
    assert await browser.js("return document.querySelector('#r-persons-error').textContent;") == ""
    assert (await browser.focused())["id"] == "r-section"
    await browser.keys("\ue009a\ue000", SECTIONS[LV][0], "\ue007")  # Enter sends the form
    await browser.find("#answer-result", "Answer sent")
    assert await browser.text("#sent .answer-state", "sent") == "sent"
    answer_id = await browser.js("return document.querySelector('#sent tbody tr').dataset.message;")
    await browser.screenshot("rfi-answered")

    # Lithuania's officer reads the answer and acknowledges it.
    await browser.sign_in(world.lt.url, "lina", PASSWORD)
    await browser.click(f'#feed li[data-key^="{LV}/"] a', "IncidentReport")
    version = await browser.text("section.version", str(answer_id))
    assert "RESPONDS_TO" in version
    assert "Seen at Silene" in version
    assert "persons.total\n3" in version or "persons.total 3" in version, version
    await browser.click("#ack-received")
    await browser.find("#ack-result", "RECEIVED sent")

    # Back at Latvia, the answer shows as acknowledged by Lithuania.
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    await browser.open(
        f"{world.lv.url}/console/?view=event&originator={LT}&event={rfi.header.event_id}"
    )
    # Shown once Latvia's service has read Lithuania's acknowledgement (live, no reload).
    await browser.find(
        "#sent .answer-state", f"acknowledged by {LT} (RECEIVED)", timeout=PARTNER_ACK_S
    )


async def _changed(browser: Browser, css: str, before: str) -> bool:
    now = await browser.texts(css)
    return bool(now) and now[0] != before


async def test_untrusted_records_are_alerts_never_reports(world: World) -> None:
    browser = world.browser
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    await browser.find("#connection", "Live")
    forged_report = lt_incident(ALL_READERS)
    forged = world.exchange.sealer(LT).seal(forged_report)
    forged.headers = [
        (name, bytes(64) if name == "oix-signature" else value) for name, value in forged.headers
    ]
    # Signed by Lithuania, released to Poland only, but written to the feed Latvia reads.
    misrouted_report = lt_incident([PL])
    misrouted = world.exchange.sealer(LT).seal(misrouted_report)
    marker = lt_incident(ALL_READERS)
    topic = world.exchange.naming.feed(LT, "incidents")
    await produce_raw(
        world.settings.bootstrap or "",
        topic,
        [forged, misrouted, world.exchange.sealer(LT).seal(marker)],
    )
    await browser.find(feed_item(marker))
    await browser.find("#alerts-count")
    assert int(await browser.text("#alerts-count")) >= 1
    for never in (forged_report, misrouted_report):
        shown = await browser.js(f"return !!document.querySelector('{feed_item(never)}');")
        assert not shown, "an untrusted or misrouted record is never a report"
    await browser.click("#nav a[data-view=alerts]")
    alert = await browser.text("#alerts .alert-item[data-kind=untrusted]", forged.message_id)
    assert "ALERT: untrusted" in alert
    assert "invalid" in alert
    violation = await browser.text(
        "#alerts .alert-item[data-kind=not_released]", misrouted.message_id
    )
    assert "not released to this agency" in violation
    await browser.screenshot("alerts")


async def test_poland_never_sees_the_report_lithuania_released_to_latvia_only(
    world: World,
) -> None:
    browser = world.browser
    secret = lt_incident([LV], purpose="LATVIA ONLY wetsuits")
    shared = lt_incident(ALL_READERS)
    await publish(world.pub[LT], secret)
    await publish(world.pub[LT], shared)
    await browser.sign_in(world.pl.url, "piotr", PASSWORD)
    await browser.find(feed_item(shared))
    source = await browser.call(lambda: browser.driver.page_source)
    assert str(secret.header.event_id) not in source
    assert str(secret.header.message_id) not in source
    await browser.open(
        f"{world.pl.url}/console/?view=event&originator={LT}&event={secret.header.event_id}"
    )
    await browser.find("h1", "Event not found")
    # Latvia's officer does see it.
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    await browser.find(feed_item(secret))


async def test_the_feed_works_from_the_keyboard_alone(world: World) -> None:
    browser = world.browser
    await browser.open(f"{world.lv.url}/console/")
    await browser.call(browser.driver.delete_all_cookies)
    await browser.open(f"{world.lv.url}/console/")
    await browser.find("#login-name")
    assert (await browser.focused())["id"] == "login-name"
    await browser.keys("liga", "\ue004", PASSWORD, "\ue007")  # Tab, Enter
    await browser.find("#feed li")
    await browser.js("document.activeElement.blur();")
    await browser.keys("j")
    first = await browser.focused()
    assert "event-link" in first["cls"]
    await browser.keys("j")
    second = await browser.focused()
    assert "event-link" in second["cls"]
    assert second["key"] != first["key"]
    await browser.keys("k")
    assert (await browser.focused())["key"] == first["key"]
    await browser.keys("\ue007")  # Enter opens the event
    await browser.find("#event-title")
    assert (await browser.focused())["id"] == "event-title"
    await browser.keys("\ue00c")  # Escape goes back
    await browser.find("#feed li")
    await browser.keys("/")
    assert (await browser.focused())["id"] == "f-q"


async def test_the_daily_summary_charts_actual_figures_without_exercises(world: World) -> None:
    browser = world.browser
    actual = report("01-lv-situation-164-attempts", originator=LT, releasable_to=ALL_READERS)
    drill = report(
        "01-lv-situation-164-attempts", originator=LT, releasable_to=ALL_READERS, mode="EXERCISE"
    )
    await publish(world.pub[LT], actual)
    await publish(world.pub[LT], drill)
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    await browser.find(feed_item(drill))
    await browser.click("#nav a[data-view=summary]")
    await browser.find(f'section.partner-summary[data-partner="{LT}"] svg.chart')
    async with httpx.AsyncClient(base_url=world.lv.url) as client:
        token = await client.post("/v1/tokens", json={"name": "liga", "password": PASSWORD})
        client.headers["Authorization"] = f"Bearer {token.json()['token']}"
        days = (await client.get("/v1/summary/daily", params={"partner": LT})).json()
    expected = {
        d["day"]: sum((d[k] or {}).get("attempts", 0) for k in ("situation", "incidents"))
        for d in days
    }
    assert any(expected.values()), days
    drawn = await browser.js(
        f'return [...document.querySelectorAll(\'section[data-partner="{LT}"] '
        "rect[data-series=attempts]')].map(r => Number(r.dataset.value));"
    )
    assert drawn == [expected[d] for d in sorted(expected)]
    excluded = sum(d["exercise_reports_excluded"] for d in days)
    assert excluded >= 1
    assert (await browser.text("#excluded")).startswith(f"{excluded} exercise")
    await browser.screenshot("summary")


async def test_many_live_events_keep_the_page_bounded_and_older_ones_load_again(
    world: World,
) -> None:
    browser = world.browser
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    await browser.find("#connection", "Live")
    burst = [lt_incident(ALL_READERS) for _ in range(560)]
    sealer = world.exchange.sealer(LT)
    topic = world.exchange.naming.feed(LT, "incidents")
    await produce_raw(world.settings.bootstrap or "", topic, [sealer.seal(r) for r in burst])
    lines = "return document.querySelectorAll('#feed li').length;"
    await eventually(
        lambda: browser.js(f"return !!document.querySelector('{feed_item(burst[-1])}');"),
        "the burst's last event",
    )
    await eventually(lambda: _only_burst(browser, burst), "the page to hold the burst only")
    assert await browser.js(lines) == 500, "at most 500 lines in the page"
    shown = await _keys(browser)
    await browser.click("#more")
    # Older lines load again; the page still holds 500, the newest left from the top.
    await eventually(lambda: _last_changed(browser, shown[-1]), "older lines loaded again")
    keys = await _keys(browser)
    assert len(keys) == 500
    assert keys[: 500 - PAGE] == shown[PAGE:]
    assert len(keys) == len(set(keys)), "no event twice"
    await browser.find("#newer", "show the newest")


async def _last_changed(browser: Browser, before: str) -> bool:
    found = await _keys(browser)
    return bool(found) and found[-1] != before


async def _only_burst(browser: Browser, burst: list[Report]) -> bool:
    found = await browser.js(
        "return [...document.querySelectorAll('#feed li')].map(li => li.dataset.key);"
    )
    # The newest 500 are in the page; the rest were shown and dropped as newer ones came.
    return len(found) == 500 and {key(r) for r in burst} >= set(found)


async def test_the_main_pages_have_no_serious_accessibility_violations(world: World) -> None:
    browser = world.browser
    found: dict[str, list[dict[str, Any]]] = {}
    await browser.open(f"{world.lv.url}/console/")
    await browser.call(browser.driver.delete_all_cookies)
    await browser.open(f"{world.lv.url}/console/")
    await browser.find("#login-name")
    found["sign-in"] = await browser.axe()
    await browser.sign_in(world.lv.url, "liga", PASSWORD)
    await browser.find("#feed li")
    found["feed"] = await browser.axe()
    await browser.click("#feed li a")
    await browser.find("section.version")
    found["event"] = await browser.axe()
    for page, ready in (
        ("requests", "#requests"),
        ("summary", "svg.chart"),
        ("alerts", "#alerts"),
    ):
        await browser.click(f"#nav a[data-view={page}]")
        await browser.find(ready)
        found[page] = await browser.axe()
        if page == "requests":
            # An open RFI's answer form, with a field in error.
            await browser.click("#requests tbody a", "Request for information")
            await browser.click("#answer-send")
            await browser.find("#r-answer-error", "write the answer")
            found["rfi-answer-form"] = await browser.axe()
    serious = {
        page: [v for v in violations if v["impact"] in {"critical", "serious"}]
        for page, violations in found.items()
    }
    assert serious == {page: [] for page in found}, serious


async def _fill(settings: Settings, exchange: Exchange, marked: int, polish: int) -> dict[str, Any]:
    """10,000 signed events released to Estonia written to its feeds, as the benchmark does.

    The first ``marked`` Lithuanian ones mention "okapi" in their narrative only, and
    ``polish`` come from Poland: both written first, so they are deep in the history.
    """
    base = lt_incident(ALL_READERS)
    lt_sealer, pl_sealer = exchange.sealer(LT), exchange.sealer(PL)
    pl_base = report("02-lv-incident-ladders", originator=PL, releasable_to=[LT, LV, EE, "UA-DPSU"])
    sealed_pl: list[SealedReport] = []
    sealed_lt: list[SealedReport] = []
    okapi: list[str] = []
    for _ in range(polish):
        ids = uuid.uuid4()
        header = pl_base.header.model_copy(update={"message_id": ids, "event_id": ids})
        sealed_pl.append(pl_sealer.seal(pl_base.model_copy(update={"header": header})))
    for i in range(STORE_EVENTS - polish):
        ids = uuid.uuid4()
        header = base.header.model_copy(update={"message_id": ids, "event_id": ids})
        update: dict[str, Any] = {"header": header}
        if i < marked:
            update["narrative"] = f"{base.narrative} A tame okapi was seen near the fence."
            okapi.append(f"{LT}/{ids}")
        sealed_lt.append(lt_sealer.seal(base.model_copy(update=update), key=f"s-{i % 64}"))
    producer = await start_producer(settings, settings.bootstrap or "", linger_ms=5)
    try:
        for topic, sealed in (
            (exchange.naming.feed(PL, "incidents"), sealed_pl),
            (exchange.naming.feed(LT, "incidents"), sealed_lt),
        ):
            for start in range(0, len(sealed), 2000):
                sent = [
                    await producer.send(topic, s.value, key=s.key, headers=s.headers)
                    for s in sealed[start : start + 2000]
                ]
                await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return {"okapi": set(okapi), "polish": {f"{PL}/{s.message_id}" for s in sealed_pl}}


async def _keys(browser: Browser) -> list[str]:
    found: list[str] = await browser.js(
        "return [...document.querySelectorAll('#feed li')].map(li => li.dataset.key);"
    )
    return found


async def _api_keys(client: httpx.AsyncClient, **query: str) -> tuple[list[str], str | None]:
    response = await client.get("/v1/events", params={"limit": str(PAGE), **query})
    assert response.status_code == 200, response.text
    page = response.json()
    return [f"{e['originator']}/{e['event_id']}" for e in page["items"]], page["next_cursor"]


async def _lines_are(browser: Browser, count: int) -> bool:
    return len(await _keys(browser)) == count


@pytest.mark.timeout(90)  # 10,000 records signed and stored first: about 20 s on a quiet machine
async def test_ten_thousand_events_page_by_cursor_and_filter_in_the_browser(
    world: World, settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    browser = world.browser
    await ensure_topics(settings, settings.bootstrap or "", exchange.router.readable_by(EE))
    async with running_liaison(settings, liaison_settings(tmp_path, EE), exchange) as ee:
        written = await _fill(settings, exchange, marked=3, polish=5)
        views = ee.service.views
        await eventually(
            lambda: _at_least(views.message_count(EE), STORE_EVENTS),
            "the 10,000 events stored at Estonia",
            timeout=90,
        )
        async with signed_in(ee.url, tmp_path / "officers.yaml", EE, name="eva") as api:
            newest, cursor = await _api_keys(api)
            second, _ = await _api_keys(api, cursor=cursor or "")
            await browser.sign_in(ee.url, "eva", PASSWORD)
            await eventually(lambda: _lines_are(browser, PAGE), "the first page")

            # One page of lines, not ten thousand; the newest first, as the API orders them.
            assert await _keys(browser) == newest
            assert await browser.js("return !document.querySelector('#more').hidden;")

            # Scrolling to the end loads the next page, by the first page's cursor.
            await browser.js("window.scrollTo(0, document.body.scrollHeight);")
            await eventually(lambda: _lines_are(browser, 2 * PAGE), "the second page")
            assert (await _keys(browser))[PAGE:] == second
            asked = await browser.js(
                "return performance.getEntriesByType('resource').map(e => e.name)"
                ".filter(n => n.includes('/v1/events?'));"
            )
            assert any(f"cursor={cursor}" in url for url in asked), asked

            # Further back, the page keeps a window: the newest lines leave from the top.
            for pages in range(3, KEEP // PAGE + 2):
                last = (await _keys(browser))[-1]
                await browser.click("#more")
                await eventually(lambda n=last: _last_changed(browser, n), f"page {pages}")
                assert len(await _keys(browser)) == min(pages * PAGE, KEEP)
            kept = await _keys(browser)
            assert len(kept) == KEEP
            assert not set(newest) & set(kept), "the first page left from the top"
            assert kept[:PAGE] == second
            assert "newer" in (await browser.text("#newer")).lower()
            # A live arrival is counted, not put at the top of an older stretch.
            arrival = lt_incident(ALL_READERS)
            topic = exchange.naming.feed(LT, "incidents")
            await produce_raw(settings.bootstrap or "", topic, [exchange.sealer(LT).seal(arrival)])
            await browser.find("#newer", "1 new event arrived")
            assert await _keys(browser) == kept
            await browser.click("#newer")
            await eventually(lambda: _first_is(browser, key(arrival)), "the arrival on top")
            assert await _keys(browser) == [key(arrival), *newest[: PAGE - 1]]

            # Filters go to the service: the few matching events are found whatever their age.
            await browser.fill("#f-partner", PL)
            await browser.click("#filters button[type=submit]")
            await eventually(lambda: _url_has(browser, f"partner={PL}"), "the partner in the URL")
            await eventually(lambda: _lines_are(browser, 5), "Poland's five events")
            assert set(await _keys(browser)) == written["polish"]
            assert all(PL in t for t in await browser.texts("#feed li"))
            assert await browser.js("return document.querySelector('#more').hidden;")

            await browser.open(f"{ee.url}/console/?view=feed&q=okapi")
            await eventually(lambda: _lines_are(browser, 3), "the three okapi events")
            assert set(await _keys(browser)) == written["okapi"]
            assert await browser.js("return document.querySelector('#f-q').value;") == "okapi"
            await browser.screenshot("feed-10000")


async def _at_least(count: Any, wanted: int) -> bool:
    return int(await count) >= wanted


async def _first_is(browser: Browser, key: str) -> bool:
    found = await _keys(browser)
    return bool(found) and found[0] == key
